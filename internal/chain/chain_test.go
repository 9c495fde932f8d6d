package chain

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
)

const mib = 1 << 20

func openPool(t testing.TB) (*Pool, string) {
	t.Helper()
	dir := t.TempDir()
	p, err := OpenPool(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, dir
}

func mustCreate(t testing.TB, p *Pool, name string, size int64) *Chain {
	t.Helper()
	c, err := p.Create(name, size)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*13) + byte(i>>12)
	}
	return b
}

func mustWrite(t testing.TB, c *Chain, b []byte, off int64) {
	t.Helper()
	if n, err := c.WriteAt(b, off); err != nil || n != len(b) {
		t.Fatalf("write %d at %d: n=%d err=%v", len(b), off, n, err)
	}
}

func readAll(t testing.TB, c *Chain, off, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := c.ReadAt(b, off); err != nil {
		t.Fatalf("read %d at %d: %v", n, off, err)
	}
	return b
}

func waitMerges(t testing.TB, p *Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.WaitMerges(ctx); err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
}

func TestConformance(t *testing.T) {
	t.Run("CreateErrors", func(t *testing.T) {
		p, _ := openPool(t)
		for _, tc := range []struct {
			name string
			size int64
			want error
		}{
			{"ok", 4096, nil},
			{"zero", 0, errdefs.ErrInvalidArgument},
			{"negative", -4096, errdefs.ErrInvalidArgument},
			{"unaligned", 4097, errdefs.ErrInvalidArgument},
			{"huge", MaxSize + BlockSize, errdefs.ErrInvalidArgument},
			{"Bad_Name", 4096, errdefs.ErrInvalidArgument},
			{"", 4096, errdefs.ErrInvalidArgument},
		} {
			_, err := p.Create(tc.name, tc.size)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Create(%q, %d) = %v, want %v", tc.name, tc.size, err, tc.want)
			}
		}
		c1, err := p.Create("ok", 4096)
		if err != nil {
			t.Fatalf("idempotent create: %v", err)
		}
		c2, _ := p.Open("ok")
		if c1 != c2 {
			t.Error("Open returned another handle")
		}
		_, err = p.Create("ok", 8192)
		wantErr(t, err, errdefs.ErrAlreadyExists)
		_, err = p.Open("missing")
		wantErr(t, err, errdefs.ErrNotFound)
		wantErr(t, p.Delete("missing"), errdefs.ErrNotFound)
	})

	t.Run("ReadWriteBounds", func(t *testing.T) {
		p, _ := openPool(t)
		c := mustCreate(t, p, "v", 16*BlockSize)
		for _, tc := range []struct {
			off int64
			n   int
			ok  bool
		}{
			{0, 16 * BlockSize, true},
			{16*BlockSize - 1, 1, true},
			{16 * BlockSize, 0, true},
			{16*BlockSize - 1, 2, false},
			{-1, 1, false},
			{16 * BlockSize, 1, false},
		} {
			_, rerr := c.ReadAt(make([]byte, tc.n), tc.off)
			_, werr := c.WriteAt(make([]byte, tc.n), tc.off)
			terr := c.Trim(tc.off, int64(tc.n))
			for _, err := range []error{rerr, werr, terr} {
				if tc.ok && err != nil || !tc.ok && !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Errorf("off %d n %d: %v", tc.off, tc.n, err)
				}
			}
		}
	})

	t.Run("UnalignedWrites", func(t *testing.T) {
		p, _ := openPool(t)
		c := mustCreate(t, p, "v", 64*BlockSize)
		want := make([]byte, 64*BlockSize)
		base := pattern(len(want), 1)
		mustWrite(t, c, base, 0)
		copy(want, base)
		if _, err := c.Snapshot("base"); err != nil {
			t.Fatal(err)
		}
		for i, w := range []struct{ off, n int64 }{
			{1, 1}, {4095, 2}, {4096, 4096}, {5000, 10000}, {8191, 8194}, {100, 4096 * 5}, {64*BlockSize - 3, 3},
		} {
			b := pattern(int(w.n), byte(50+i))
			mustWrite(t, c, b, w.off)
			copy(want[w.off:], b)
			if got := readAll(t, c, 0, int64(len(want))); !bytes.Equal(got, want) {
				t.Fatalf("after write %d at %d: mismatch", w.n, w.off)
			}
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("TrimNeverExposesOlderLayer", func(t *testing.T) {
		p, dir := openPool(t)
		c := mustCreate(t, p, "v", 32*BlockSize)
		mustWrite(t, c, pattern(32*BlockSize, 3), 0)
		if _, err := c.Snapshot("s1"); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, c, pattern(8*BlockSize, 9), 0)
		if err := c.Trim(100, 10*BlockSize); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteZeroes(20*BlockSize, 4*BlockSize); err != nil {
			t.Fatal(err)
		}
		want := pattern(32*BlockSize, 3)
		copy(want, pattern(8*BlockSize, 9))
		clear(want[100 : 100+10*BlockSize])
		clear(want[20*BlockSize : 24*BlockSize])
		if got := readAll(t, c, 0, 32*BlockSize); !bytes.Equal(got, want) {
			t.Fatal("trim: mismatch")
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		p.Close()
		p2, err := OpenPool(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer p2.Close()
		c2, _ := p2.Open("v")
		if got := readAll(t, c2, 0, 32*BlockSize); !bytes.Equal(got, want) {
			t.Fatal("trim after reopen: mismatch")
		}
		ext, err := c2.ChangedExtents("s1", "")
		if err != nil {
			t.Fatal(err)
		}
		if len(ext) != 2 || ext[0] != (Extent{0, 11 * BlockSize}) || ext[1] != (Extent{20 * BlockSize, 4 * BlockSize}) {
			t.Fatalf("changed extents %v", ext)
		}
	})

	t.Run("Grow", func(t *testing.T) {
		p, dir := openPool(t)
		c := mustCreate(t, p, "v", 4*BlockSize)
		mustWrite(t, c, pattern(4*BlockSize, 1), 0)
		wantErr(t, c.Grow(2*BlockSize), errdefs.ErrFailedPrecondition)
		wantErr(t, c.Grow(5*BlockSize+1), errdefs.ErrInvalidArgument)
		if err := c.Grow(4*BlockSize + 8*mib); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, c, []byte("tail"), c.Size()-4)
		p.Close()
		p, _ = OpenPool(dir)
		defer p.Close()
		c, _ = p.Open("v")
		if c.Size() != 4*BlockSize+8*mib || string(readAll(t, c, c.Size()-4, 4)) != "tail" {
			t.Fatal("grow not persisted")
		}
	})

	t.Run("Snapshots", func(t *testing.T) {
		p, _ := openPool(t)
		c := mustCreate(t, p, "v", 8*BlockSize)
		if _, err := c.Snapshot("s1"); err != nil {
			t.Fatal(err)
		}
		_, err := c.Snapshot("s1")
		wantErr(t, err, errdefs.ErrAlreadyExists)
		_, err = c.Snapshot("BAD")
		wantErr(t, err, errdefs.ErrInvalidArgument)
		_, err = c.DeleteSnapshot("nope")
		wantErr(t, err, errdefs.ErrNotFound)
		wantErr(t, c.Revert("nope"), errdefs.ErrNotFound)
		_, err = c.ChangedExtents("nope", "")
		wantErr(t, err, errdefs.ErrNotFound)
		_, err = c.ChangedExtents("", "nope")
		wantErr(t, err, errdefs.ErrNotFound)
		if _, err := c.Snapshot("s2"); err != nil {
			t.Fatal(err)
		}
		_, err = c.ChangedExtents("s2", "s1")
		wantErr(t, err, errdefs.ErrInvalidArgument)
		wantErr(t, c.Revert("s1"), errdefs.ErrFailedPrecondition)
		if s := c.Snapshots(); len(s) != 2 || s[0].Name != "s1" || s[1].Name != "s2" {
			t.Fatalf("snapshots %+v", s)
		}
	})

	t.Run("Revert", func(t *testing.T) {
		p, _ := openPool(t)
		c := mustCreate(t, p, "v", 8*BlockSize)
		mustWrite(t, c, pattern(8*BlockSize, 1), 0)
		if _, err := c.Snapshot("s1"); err != nil {
			t.Fatal(err)
		}
		if err := c.Grow(16 * BlockSize); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, c, pattern(16*BlockSize, 2), 0)
		if err := c.Trim(0, BlockSize); err != nil {
			t.Fatal(err)
		}
		if err := c.Revert("s1"); err != nil {
			t.Fatal(err)
		}
		if c.Size() != 8*BlockSize || !bytes.Equal(readAll(t, c, 0, 8*BlockSize), pattern(8*BlockSize, 1)) {
			t.Fatal("revert: wrong content")
		}
		// Reverting twice is fine and the snapshot stays.
		if err := c.Revert("s1"); err != nil {
			t.Fatal(err)
		}
		if len(c.Snapshots()) != 1 {
			t.Fatal("snapshot lost")
		}
	})

	t.Run("CloneErrors", func(t *testing.T) {
		p, _ := openPool(t)
		c := mustCreate(t, p, "v", 8*BlockSize)
		if _, err := c.Snapshot("s1"); err != nil {
			t.Fatal(err)
		}
		_, err := p.Clone("nope", "s1", "d", 0)
		wantErr(t, err, errdefs.ErrNotFound)
		_, err = p.Clone("v", "nope", "d", 0)
		wantErr(t, err, errdefs.ErrNotFound)
		_, err = p.Clone("v", "s1", "d", 4*BlockSize)
		wantErr(t, err, errdefs.ErrInvalidArgument)
		_, err = p.Clone("v", "s1", "d", 8*BlockSize+1)
		wantErr(t, err, errdefs.ErrInvalidArgument)
		_, err = p.Clone("v", "s1", "v", 0)
		wantErr(t, err, errdefs.ErrAlreadyExists)
		d, err := p.Clone("v", "s1", "d", 16*BlockSize)
		if err != nil {
			t.Fatal(err)
		}
		if d2, err := p.Clone("v", "s1", "d", 16*BlockSize); err != nil || d2 != d {
			t.Fatalf("idempotent clone: %v", err)
		}
		if inf := d.Info(); inf.Parent != "v@s1" || inf.Size != 16*BlockSize || inf.Layers != 2 {
			t.Fatalf("info %+v", inf)
		}
		if s := c.Snapshots(); s[0].Clones != 1 {
			t.Fatalf("clones = %d", s[0].Clones)
		}
		res, err := c.DeleteSnapshot("s1")
		if err != nil || res.KeptForClones != 1 {
			t.Fatalf("delete snapshot: %+v %v", res, err)
		}
	})

	t.Run("ClosedHandles", func(t *testing.T) {
		p, _ := openPool(t)
		c := mustCreate(t, p, "v", 8*BlockSize)
		if err := p.Delete("v"); err != nil {
			t.Fatal(err)
		}
		_, err := c.WriteAt(make([]byte, 10), 0)
		wantErr(t, err, errdefs.ErrFailedPrecondition)
		p.Close()
		_, err = p.Create("w", 4096)
		wantErr(t, err, errdefs.ErrFailedPrecondition)
	})

	t.Run("ListUsage", func(t *testing.T) {
		p, _ := openPool(t)
		for _, n := range []string{"b", "a", "c"} {
			mustCreate(t, p, n, 8*BlockSize)
		}
		names, err := p.List()
		if err != nil || len(names) != 3 || names[0] != "a" || names[2] != "c" {
			t.Fatalf("list %v %v", names, err)
		}
		c, _ := p.Open("a")
		mustWrite(t, c, pattern(8*BlockSize, 1), 0)
		u, err := p.Usage()
		if err != nil || u.Capacity <= 0 || u.Available <= 0 || u.Allocated < 8*BlockSize {
			t.Fatalf("usage %+v %v", u, err)
		}
	})
}

// TestChangedExtents checks the ranges between two snapshots and between a
// snapshot and the head.
func TestChangedExtents(t *testing.T) {
	p, _ := openPool(t)
	c := mustCreate(t, p, "v", 2048*BlockSize)
	mustWrite(t, c, pattern(BlockSize, 1), 0)
	c.Snapshot("s1")
	mustWrite(t, c, pattern(3*BlockSize, 1), 10*BlockSize)
	mustWrite(t, c, pattern(10, 1), 1500*BlockSize+7)
	c.Snapshot("s2")
	c.Trim(100*BlockSize, 2*BlockSize)                   // never written: nothing to record
	c.Trim(1500*BlockSize, BlockSize)                    // hides s2's data: recorded
	mustWrite(t, c, pattern(BlockSize, 1), 11*BlockSize) // overlaps s2's
	mustWrite(t, c, pattern(BlockSize, 1), 12*BlockSize) // adjacent: merged
	for _, tc := range []struct {
		from, to string
		want     []Extent
	}{
		{"", "s1", []Extent{{0, BlockSize}}},
		{"s1", "s2", []Extent{{10 * BlockSize, 3 * BlockSize}, {1500 * BlockSize, BlockSize}}},
		{"s2", "", []Extent{{11 * BlockSize, 2 * BlockSize}, {1500 * BlockSize, BlockSize}}},
		{"s1", "", []Extent{{10 * BlockSize, 3 * BlockSize}, {1500 * BlockSize, BlockSize}}},
		{"s2", "s2", []Extent{}},
	} {
		got, err := c.ChangedExtents(tc.from, tc.to)
		if err != nil {
			t.Fatal(err)
		}
		sortExtents(tc.want)
		if len(got) != len(tc.want) {
			t.Errorf("%q..%q: %v, want %v", tc.from, tc.to, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%q..%q: %v, want %v", tc.from, tc.to, got, tc.want)
			}
		}
	}
}

func sortExtents(e []Extent) {
	for i := range e {
		for j := i + 1; j < len(e); j++ {
			if e[j].Offset < e[i].Offset {
				e[i], e[j] = e[j], e[i]
			}
		}
	}
}

func layerFiles(t testing.TB, dir string) int {
	ents, err := os.ReadDir(filepath.Join(dir, "layers"))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func dataBytes(p *Pool) int64 {
	u, _ := p.Usage()
	return u.Allocated
}

// TestSpaceReclaimedByMerge: deleting snapshots whose blocks were overwritten
// gives the space back once the merge is done, the content is unchanged, and
// the merged layer's files are gone.
func TestSpaceReclaimedByMerge(t *testing.T) {
	p, dir := openPool(t)
	c := mustCreate(t, p, "v", 64*mib)
	const n = 8 * mib
	for i := 0; i < 4; i++ {
		mustWrite(t, c, pattern(n, byte(i)), 0) // same range each time
		if _, err := c.Snapshot("s" + string(rune('0'+i))); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(t, c, pattern(n/2, 9), 0)
	want := readAll(t, c, 0, 64*mib)
	before := dataBytes(p)
	if before < 4*n {
		t.Fatalf("allocated %d before deletes", before)
	}
	for _, s := range []string{"s1", "s0", "s3"} { // middle, bottom, into the head
		res, err := c.DeleteSnapshot(s)
		if err != nil || res.KeptForClones != 0 {
			t.Fatal(res, err)
		}
	}
	waitMerges(t, p)
	after := dataBytes(p)
	if after > before-2*n {
		t.Fatalf("allocated %d after deletes, %d before: space not given back", after, before)
	}
	if got := readAll(t, c, 0, 64*mib); !bytes.Equal(got, want) {
		t.Fatal("content changed by merges")
	}
	if inf := c.Info(); inf.Layers != 2 {
		t.Fatalf("layers = %d, want 2", inf.Layers)
	}
	if got := layerFiles(t, dir); got != 4 { // sealed data+map, head data+zero
		t.Fatalf("%d layer files", got)
	}
	// The remaining snapshot still reads as it was.
	d, err := p.Clone("v", "s2", "d", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, d, 0, n); !bytes.Equal(got, pattern(n, 2)) {
		t.Fatal("snapshot s2 changed by merges")
	}
}

// TestVolumeDeleteFreesSharedLayers: a layer shared with a clone survives the
// delete of its creator and goes with its last user.
func TestVolumeDeleteFreesSharedLayers(t *testing.T) {
	p, dir := openPool(t)
	c := mustCreate(t, p, "v", 16*mib)
	mustWrite(t, c, pattern(8*mib, 1), 0)
	c.Snapshot("s1")
	mustWrite(t, c, pattern(4*mib, 2), 0)
	c.Snapshot("s2")
	d, err := p.Clone("v", "s1", "d", 0)
	if err != nil {
		t.Fatal(err)
	}
	e, err := p.Clone("v", "s2", "e", 0)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, d, pattern(BlockSize, 3), 0)
	if res, _ := c.DeleteSnapshot("s1"); res.KeptForClones != 1 {
		t.Fatalf("kept for clones = %d", res.KeptForClones)
	}
	waitMerges(t, p)
	base := dataBytes(p)
	if err := p.Delete("v"); err != nil {
		t.Fatal(err)
	}
	waitMerges(t, p)
	want := pattern(8*mib, 1)
	copy(want, pattern(BlockSize, 3))
	if got := readAll(t, d, 0, 8*mib); !bytes.Equal(got, want) {
		t.Fatal("clone d changed")
	}
	want = pattern(8*mib, 1)
	copy(want, pattern(4*mib, 2))
	if got := readAll(t, e, 0, 8*mib); !bytes.Equal(got, want) {
		t.Fatal("clone e changed")
	}
	if dataBytes(p) > base {
		t.Fatalf("allocated grew: %d > %d", dataBytes(p), base)
	}
	p.Delete("d")
	waitMerges(t, p)
	if got := readAll(t, e, 0, 8*mib); !bytes.Equal(got, want) {
		t.Fatal("clone e changed after d's delete")
	}
	mid := dataBytes(p)
	if mid > 12*mib+mib {
		t.Fatalf("allocated %d with only e left", mid)
	}
	p.Delete("e")
	waitMerges(t, p)
	if got := layerFiles(t, dir); got != 0 {
		t.Fatalf("%d layer files left", got)
	}
	if dataBytes(p) != 0 {
		t.Fatalf("allocated %d", dataBytes(p))
	}
}

// TestZeroLogCompaction: trimming the same range again and again keeps the
// head's zero log small, and the trims still hide the lower layer.
func TestZeroLogCompaction(t *testing.T) {
	p, dir := openPool(t)
	c := mustCreate(t, p, "v", 64*BlockSize)
	mustWrite(t, c, pattern(64*BlockSize, 1), 0)
	c.Snapshot("s")
	defer func(old int64) { zeroCompactAt = old }(zeroCompactAt)
	zeroCompactAt = 4096
	for i := 0; i < 1000; i++ {
		mustWrite(t, c, pattern(BlockSize, 2), 0)
		if err := c.Trim(0, 2*BlockSize); err != nil {
			t.Fatal(err)
		}
	}
	st, err := os.Stat(filepath.Join(dir, "layers", c.meta.head()+".zero"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > zeroCompactAt {
		t.Fatalf("zero log is %d bytes", st.Size())
	}
	want := pattern(64*BlockSize, 1)
	clear(want[:2*BlockSize])
	if !bytes.Equal(readAll(t, c, 0, 64*BlockSize), want) {
		t.Fatal("mismatch")
	}
	p.Close()
	p, _ = OpenPool(dir)
	defer p.Close()
	c, _ = p.Open("v")
	if !bytes.Equal(readAll(t, c, 0, 64*BlockSize), want) {
		t.Fatal("mismatch after reopen")
	}
}

// TestConcurrentMerge: a writer and readers keep going while snapshots are
// taken and deleted (merges into the live head and into sealed layers run
// underneath); the writer's own model must match at the end.
func TestConcurrentMerge(t *testing.T) {
	p, _ := openPool(t)
	const blocks = 512
	c := mustCreate(t, p, "v", blocks*BlockSize)
	want := make([]byte, blocks*BlockSize)
	stop := make(chan struct{})
	done := make(chan error, 3)
	go func() { // the only writer
		r := uint32(1)
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			r = r*1664525 + 1013904223
			b := int64(r>>8) % blocks
			if i%7 == 0 {
				if err := c.Trim(b*BlockSize, BlockSize); err != nil {
					done <- err
					return
				}
				clear(want[b*BlockSize : (b+1)*BlockSize])
				continue
			}
			blk := pattern(BlockSize, byte(i))
			if _, err := c.WriteAt(blk, b*BlockSize); err != nil {
				done <- err
				return
			}
			copy(want[b*BlockSize:], blk)
		}
	}()
	for k := 0; k < 2; k++ {
		go func() { // readers
			buf := make([]byte, 8*BlockSize)
			for {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				if _, err := c.ReadAt(buf, 0); err != nil {
					done <- err
					return
				}
			}
		}()
	}
	for i := 0; i < 40; i++ {
		name := "s" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		if _, err := c.Snapshot(name); err != nil {
			t.Fatal(err)
		}
		if s := c.Snapshots(); len(s) > 2 {
			if _, err := c.DeleteSnapshot(s[len(s)-1-i%2].Name); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Millisecond) // let writes land between snapshots
	}
	close(stop)
	for k := 0; k < 3; k++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	waitMerges(t, p)
	if !bytes.Equal(readAll(t, c, 0, blocks*BlockSize), want) {
		t.Fatal("content differs from the writer's model")
	}
	if inf := c.Info(); inf.Layers != 3 {
		t.Fatalf("%d layers after merges, want 3", inf.Layers)
	}
}

// TestOpenPoolCleansUp: OpenPool removes what interrupted operations leave:
// layers no chain lists, temp files, the map of a head whose snapshot never
// committed, the zero log of a sealed layer; and resumes a merge whose
// snapshot delete committed.
func TestOpenPoolCleansUp(t *testing.T) {
	p, dir := openPool(t)
	c := mustCreate(t, p, "v", 16*BlockSize)
	mustWrite(t, c, pattern(16*BlockSize, 1), 0)
	c.Snapshot("s1")
	mustWrite(t, c, pattern(4*BlockSize, 2), 0)
	c.Snapshot("s2")
	mustWrite(t, c, pattern(BlockSize, 3), 0)
	want := readAll(t, c, 0, 16*BlockSize)
	m := c.meta
	p.Close()

	layers := filepath.Join(dir, "layers")
	orphan := newLayerID()
	for _, f := range []string{orphan + ".data", orphan + ".map", ".x.map.tmp", m.Layers[0] + ".zero", m.head() + ".map"} {
		os.WriteFile(filepath.Join(layers, f), []byte("junk"), 0o644)
	}
	os.WriteFile(filepath.Join(dir, "chains", ".v.json.tmp"), []byte("{"), 0o644)
	// A snapshot delete that committed just before a crash.
	m2 := m.clone()
	m2.Snapshots = m2.Snapshots[1:]
	data, _ := json.Marshal(m2)
	os.WriteFile(filepath.Join(dir, "chains", "v.json"), data, 0o644)

	p, err := OpenPool(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	waitMerges(t, p)
	ents, _ := os.ReadDir(layers)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	// s1's layer merged away: s2's layer (data, map) and the head (data, zero).
	if len(names) != 4 {
		t.Fatalf("layer files after cleanup: %v", names)
	}
	if _, err := os.Stat(filepath.Join(dir, "chains", ".v.json.tmp")); !os.IsNotExist(err) {
		t.Fatal("temp metadata left")
	}
	c, err = p.Open("v")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, c, 0, 16*BlockSize), want) {
		t.Fatal("content changed")
	}
	if inf := c.Info(); inf.Layers != 2 || len(inf.Snapshots) != 1 {
		t.Fatalf("info %+v", inf)
	}
}
