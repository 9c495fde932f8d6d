package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
)

// The model: a volume is a []byte, a snapshot a copy of it.
type mvol struct {
	data  []byte
	snaps map[string][]byte
	order []string // snapshot names, oldest first
}

type model struct{ vols map[string]*mvol }

// source gives the random choices of a run: a seeded PRNG, or fuzz input.
type source interface {
	intn(n int) int
	done() bool
}

type randSource struct {
	r     *rand.Rand
	steps int
}

func (s *randSource) intn(n int) int { return s.r.IntN(n) }
func (s *randSource) done() bool     { s.steps--; return s.steps < 0 }

type byteSource struct{ b []byte }

func (s *byteSource) intn(n int) int {
	v := 0
	for k := 0; k < 3; k++ {
		v <<= 8
		if len(s.b) > 0 {
			v |= int(s.b[0])
			s.b = s.b[1:]
		}
	}
	return v % n
}
func (s *byteSource) done() bool { return len(s.b) == 0 }

type runner struct {
	t    testing.TB
	dir  string
	pool *Pool
	m    model
	src  source
	log  []string
	seq  int
}

func (r *runner) fatalf(format string, args ...any) {
	r.t.Helper()
	tail := r.log
	if len(tail) > 30 {
		tail = tail[len(tail)-30:]
	}
	for _, l := range tail {
		r.t.Log(l)
	}
	r.t.Fatalf(format, args...)
}

func (r *runner) logf(format string, args ...any) {
	r.log = append(r.log, fmt.Sprintf(format, args...))
}

func (r *runner) names() []string {
	var ns []string
	for n := range r.m.vols {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

func (r *runner) pick() (string, *mvol) {
	ns := r.names()
	if len(ns) == 0 {
		return "", nil
	}
	n := ns[r.src.intn(len(ns))]
	return n, r.m.vols[n]
}

func (r *runner) open(name string) *Chain {
	r.t.Helper()
	c, err := r.pool.Open(name)
	if err != nil {
		r.fatalf("open %s: %v", name, err)
	}
	return c
}

func (r *runner) newName(prefix string) string {
	r.seq++
	return prefix + strconv.Itoa(r.seq)
}

// sizes favour a few blocks, and cross a 4 MiB index chunk sometimes.
func (r *runner) size() int64 {
	switch r.src.intn(4) {
	case 0:
		return int64(1+r.src.intn(8)) * BlockSize
	case 1:
		return int64(chunkBlocks+1+r.src.intn(300)) * BlockSize
	default:
		return int64(1+r.src.intn(64)) * BlockSize
	}
}

func (r *runner) rangeIn(size int64) (int64, int64) {
	var off, n int64
	switch r.src.intn(3) {
	case 0: // aligned
		off = int64(r.src.intn(int(size/BlockSize))) * BlockSize
		n = int64(1+r.src.intn(8)) * BlockSize
	case 1: // small unaligned
		off = int64(r.src.intn(int(size)))
		n = int64(1 + r.src.intn(3*BlockSize))
	default: // large unaligned
		off = int64(r.src.intn(int(size)))
		n = int64(1 + r.src.intn(int(min(size, 64*BlockSize))))
	}
	if off+n > size {
		n = size - off
	}
	return off, n
}

func (r *runner) step() {
	switch op := r.src.intn(100); {
	case op < 6 || len(r.m.vols) == 0: // create
		name := r.newName("v")
		size := r.size()
		r.logf("create %s %d", name, size)
		if _, err := r.pool.Create(name, size); err != nil {
			r.fatalf("create: %v", err)
		}
		r.m.vols[name] = &mvol{data: make([]byte, size), snaps: map[string][]byte{}}
	case op < 40: // write
		name, v := r.pick()
		off, n := r.rangeIn(int64(len(v.data)))
		buf := make([]byte, n)
		fill := byte(r.src.intn(255) + 1)
		for i := range buf {
			buf[i] = fill + byte(i*7)
		}
		r.logf("write %s %d %d", name, off, n)
		if _, err := r.open(name).WriteAt(buf, off); err != nil {
			r.fatalf("write: %v", err)
		}
		copy(v.data[off:], buf)
	case op < 50: // trim or write zeroes
		name, v := r.pick()
		off, n := r.rangeIn(int64(len(v.data)))
		r.logf("trim %s %d %d", name, off, n)
		c := r.open(name)
		f := c.Trim
		if op&1 == 0 {
			f = c.WriteZeroes
		}
		if err := f(off, n); err != nil {
			r.fatalf("trim: %v", err)
		}
		clear(v.data[off : off+n])
	case op < 60: // snapshot
		name, v := r.pick()
		s := r.newName("s")
		r.logf("snapshot %s %s", name, s)
		if _, err := r.open(name).Snapshot(s); err != nil {
			r.fatalf("snapshot: %v", err)
		}
		v.snaps[s] = bytes.Clone(v.data)
		v.order = append(v.order, s)
	case op < 66: // clone
		name, v := r.pick()
		if len(v.order) == 0 {
			return
		}
		s := v.order[r.src.intn(len(v.order))]
		dst := r.newName("c")
		size := int64(len(v.snaps[s]))
		if r.src.intn(3) == 0 {
			size += int64(r.src.intn(8)) * BlockSize
		}
		r.logf("clone %s@%s %s %d", name, s, dst, size)
		if _, err := r.pool.Clone(name, s, dst, size); err != nil {
			r.fatalf("clone: %v", err)
		}
		d := make([]byte, size)
		copy(d, v.snaps[s])
		r.m.vols[dst] = &mvol{data: d, snaps: map[string][]byte{}}
	case op < 71: // revert
		name, v := r.pick()
		if len(v.order) == 0 {
			return
		}
		s := v.order[r.src.intn(len(v.order))]
		r.logf("revert %s %s", name, s)
		err := r.open(name).Revert(s)
		if s != v.order[len(v.order)-1] {
			if !errors.Is(err, errdefs.ErrFailedPrecondition) {
				r.fatalf("revert past later snapshots: %v", err)
			}
			return
		}
		if err != nil {
			r.fatalf("revert: %v", err)
		}
		v.data = bytes.Clone(v.snaps[s])
	case op < 82: // delete snapshot
		name, v := r.pick()
		if len(v.order) == 0 {
			return
		}
		i := r.src.intn(len(v.order))
		s := v.order[i]
		r.logf("delsnap %s %s", name, s)
		if _, err := r.open(name).DeleteSnapshot(s); err != nil {
			r.fatalf("delete snapshot: %v", err)
		}
		delete(v.snaps, s)
		v.order = append(v.order[:i], v.order[i+1:]...)
		if r.src.intn(2) == 0 {
			r.wait()
		}
	case op < 86: // grow
		name, v := r.pick()
		add := int64(r.src.intn(4)) * BlockSize
		r.logf("grow %s +%d", name, add)
		if err := r.open(name).Grow(int64(len(v.data)) + add); err != nil {
			r.fatalf("grow: %v", err)
		}
		v.data = append(v.data, make([]byte, add)...)
	case op < 89: // delete volume
		name, _ := r.pick()
		r.logf("delete %s", name)
		if err := r.pool.Delete(name); err != nil {
			r.fatalf("delete: %v", err)
		}
		delete(r.m.vols, name)
	case op < 93: // reopen
		r.logf("reopen")
		r.reopen()
	case op < 96: // verify a snapshot through a temporary clone
		name, v := r.pick()
		if len(v.order) == 0 {
			return
		}
		s := v.order[r.src.intn(len(v.order))]
		tmp := r.newName("t")
		r.logf("verify %s@%s via %s", name, s, tmp)
		c, err := r.pool.Clone(name, s, tmp, 0)
		if err != nil {
			r.fatalf("clone: %v", err)
		}
		r.compare(c, v.snaps[s], name+"@"+s)
		if err := r.pool.Delete(tmp); err != nil {
			r.fatalf("delete: %v", err)
		}
	default: // changed extents since a snapshot cover every changed byte
		name, v := r.pick()
		if len(v.order) == 0 {
			return
		}
		s := v.order[r.src.intn(len(v.order))]
		r.logf("changed %s %s", name, s)
		ext, err := r.open(name).ChangedExtents(s, "")
		if err != nil {
			r.fatalf("changed extents: %v", err)
		}
		old := v.snaps[s]
		covered := make([]bool, len(v.data)/BlockSize)
		for _, e := range ext {
			for b := e.Offset / BlockSize; b < (e.Offset+e.Length)/BlockSize; b++ {
				covered[b] = true
			}
		}
		for b := range covered {
			lo, hi := b*BlockSize, (b+1)*BlockSize
			was := make([]byte, BlockSize)
			if lo < len(old) {
				copy(was, old[lo:min(hi, len(old))])
			}
			if !covered[b] && !bytes.Equal(was, v.data[lo:hi]) {
				r.fatalf("changed extents %s since %s miss block %d (%v)", name, s, b, ext)
			}
		}
	}
}

func (r *runner) wait() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.pool.WaitMerges(ctx); err != nil {
		r.fatalf("wait merges: %v", err)
	}
}

func (r *runner) reopen() {
	if err := r.pool.Close(); err != nil {
		r.fatalf("close: %v", err)
	}
	p, err := OpenPool(r.dir)
	if err != nil {
		r.fatalf("reopen: %v", err)
	}
	r.pool = p
}

func (r *runner) compare(c *Chain, want []byte, what string) {
	r.t.Helper()
	if c.Size() != int64(len(want)) {
		r.fatalf("%s: size %d, want %d", what, c.Size(), len(want))
	}
	got := make([]byte, len(want))
	if _, err := c.ReadAt(got, 0); err != nil {
		r.fatalf("%s: read: %v", what, err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for got[i] == want[i] {
			i++
		}
		r.fatalf("%s: differs at byte %d (block %d): got %d want %d", what, i, i/BlockSize, got[i], want[i])
	}
}

func (r *runner) checkAll() {
	r.t.Helper()
	names, err := r.pool.List()
	if err != nil {
		r.fatalf("list: %v", err)
	}
	if len(names) != len(r.m.vols) {
		r.fatalf("list = %v, model has %v", names, r.names())
	}
	for _, n := range r.names() {
		c := r.open(n)
		r.compare(c, r.m.vols[n].data, n)
		var snaps []string
		for _, s := range c.Snapshots() {
			snaps = append(snaps, s.Name)
		}
		if fmt.Sprint(snaps) != fmt.Sprint(r.m.vols[n].order) {
			r.fatalf("%s: snapshots %v, model %v", n, snaps, r.m.vols[n].order)
		}
	}
}

func runModel(t testing.TB, dir string, src source) *runner {
	p, err := OpenPool(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{t: t, dir: dir, pool: p, m: model{vols: map[string]*mvol{}}, src: src}
	for i := 0; !src.done(); i++ {
		r.step()
		if i%5 == 4 {
			r.checkAll()
		}
	}
	r.checkAll()
	r.wait()
	r.checkAll()
	r.reopen()
	r.wait()
	r.checkAll()
	// Deleting every volume leaves no layer behind.
	for _, n := range r.names() {
		if err := r.pool.Delete(n); err != nil {
			r.fatalf("delete: %v", err)
		}
	}
	r.wait() // a merge in flight holds its layers until it stops
	ents, _ := os.ReadDir(dir + "/layers")
	if len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		r.fatalf("layers left after deleting every volume: %v", names)
	}
	if err := r.pool.Close(); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestModel(t *testing.T) {
	seeds, steps := 40, 400
	if testing.Short() {
		seeds, steps = 6, 200
	}
	base := uint64(time.Now().UnixNano())
	if s := os.Getenv("CHAIN_SEED"); s != "" {
		base, _ = strconv.ParseUint(s, 10, 64)
		seeds = 1
	}
	deadline := time.Now().Add(40 * time.Second)
	for i := 0; i < seeds && time.Now().Before(deadline); i++ {
		seed := base + uint64(i)
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			defer func() {
				if t.Failed() {
					t.Logf("reproduce with CHAIN_SEED=%d go test -run TestModel ./internal/chain/", seed)
				}
			}()
			runModel(t, t.TempDir(), &randSource{r: rand.New(rand.NewPCG(seed, seed)), steps: steps})
		})
	}
}

// FuzzChain decodes the input as a sequence of operations (each choice
// reads bytes of the input) and checks the chain against the model.
func FuzzChain(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte("\x00\x00\x05\x00\x00\x10\x00\x00\x20\x00\x01\x00\x00\x00\x30\x00\x00\x55\x00\x00\x3a\x00\x00\x4a\x00\x00\x5b\x00\x00\x0c"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1024 {
			data = data[:1024]
		}
		runModel(t, t.TempDir(), &byteSource{b: data})
	})
}
