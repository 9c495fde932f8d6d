package replica

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/chain"
	"github.com/strata-storage/strata/internal/errdefs"
)

func TestEpochsOpen(t *testing.T) {
	dir := t.TempDir()
	ep, err := OpenEpochs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cur, err := ep.Current("vol"); err != nil || cur != 0 {
		t.Fatalf("Current of a new volume = %d, %v; want 0", cur, err)
	}
	f1, err := ep.Open("vol", 1)
	if err != nil {
		t.Fatal(err)
	}
	if f1.Epoch() != 1 || f1.Volume() != "vol" {
		t.Fatalf("fence = %s@%d", f1.Volume(), f1.Epoch())
	}
	if data, err := os.ReadFile(filepath.Join(dir, "vol.epoch")); err != nil || strings.TrimSpace(string(data)) != "1" {
		t.Fatalf("vol.epoch = %q, %v; want 1", data, err)
	}
	if _, err := ep.Open("vol", 1); err != nil {
		t.Fatalf("reopen at the same epoch: %v", err)
	}
	if err := f1.Check(); err != nil {
		t.Fatalf("epoch-1 fence before epoch 5: %v", err)
	}
	f5, err := ep.Open("vol", 5)
	if err != nil {
		t.Fatal(err)
	}
	err = f1.Check()
	if !errors.Is(err, ErrStaleEpoch) || !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("epoch-1 fence after epoch 5: %v, want ErrStaleEpoch", err)
	}
	if !strings.Contains(err.Error(), "epoch 1") || !strings.Contains(err.Error(), "epoch 5") {
		t.Errorf("stale error %q does not name both epochs", err)
	}
	if err := f5.Check(); err != nil {
		t.Fatal(err)
	}
	_, err = ep.Open("vol", 3)
	if !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("Open at epoch 3 after 5: %v, want ErrStaleEpoch", err)
	}
	if !strings.Contains(err.Error(), "epoch 3") || !strings.Contains(err.Error(), "epoch 5") {
		t.Errorf("stale error %q does not name both epochs", err)
	}
	// Volumes are independent.
	if _, err := ep.Open("other", 1); err != nil {
		t.Fatal(err)
	}

	// A restart reads the epochs back.
	ep2, err := OpenEpochs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cur, err := ep2.Current("vol"); err != nil || cur != 5 {
		t.Fatalf("Current after restart = %d, %v; want 5", cur, err)
	}
	if _, err := ep2.Open("vol", 4); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("Open at epoch 4 after restart: %v, want ErrStaleEpoch", err)
	}
	if _, err := ep2.Open("vol", 5); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("epoch dir holds %d files, want 2 (no temp files left)", len(ents))
	}
}

func TestEpochsBadInput(t *testing.T) {
	dir := t.TempDir()
	ep, err := OpenEpochs(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "../x", "A", "a/b"} {
		if _, err := ep.Open(name, 1); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Open(%q): %v, want invalid argument", name, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.epoch"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ep.Open("bad", 9); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Open over a corrupt epoch file: %v, want failed precondition", err)
	}
	// A temp file of an interrupted write is removed at open.
	tmp := filepath.Join(dir, ".x.epoch.tmp")
	if err := os.WriteFile(tmp, []byte("7"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenEpochs(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("temp file left: %v", err)
	}
}

// TestEpochOpenWaitsForInFlight shows that raising the epoch waits for the
// I/O already admitted at the older one, and that none is admitted after.
func TestEpochOpenWaitsForInFlight(t *testing.T) {
	ep, err := OpenEpochs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f1, err := ep.Open("vol", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := f1.enter(); err != nil {
		t.Fatal(err)
	}
	opened := make(chan error, 1)
	go func() {
		_, err := ep.Open("vol", 2)
		opened <- err
	}()
	select {
	case err := <-opened:
		t.Fatalf("Open at epoch 2 returned (%v) while epoch-1 I/O was in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	f1.leave()
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	if err := f1.enter(); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("epoch-1 I/O after epoch 2: %v, want ErrStaleEpoch", err)
	}
}

func newPool(t testing.TB) (*chain.Pool, string) {
	t.Helper()
	dir := t.TempDir()
	p, err := chain.OpenPool(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, dir
}

func TestLocalFencing(t *testing.T) {
	p, dir := newPool(t)
	c, err := p.Create("vol", 4*mib)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := OpenEpochs(filepath.Join(dir, "epochs"))
	if err != nil {
		t.Fatal(err)
	}
	l1, err := OpenLocal(c, ep, 1)
	if err != nil {
		t.Fatal(err)
	}
	a := pattern(8192, 1)
	mustWrite(t, l1, a, 0)
	equalBytes(t, "epoch-1 read", mustRead(t, l1, 0, 8192), a)

	l2, err := OpenLocal(c, ep, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenLocal(c, ep, 1); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("OpenLocal at epoch 1 after 2: %v, want ErrStaleEpoch", err)
	}
	b := pattern(8192, 2)
	for name, fn := range map[string]func() error{
		"write":        func() error { _, err := l1.WriteAt(b, 0); return err },
		"read":         func() error { _, err := l1.ReadAt(make([]byte, 10), 0); return err },
		"flush":        l1.Flush,
		"trim":         func() error { return l1.Trim(0, 4096) },
		"write-zeroes": func() error { return l1.WriteZeroes(0, 4096) },
		"grow":         func() error { return l1.Grow(8 * mib) },
		"snapshot":     func() error { return l1.Snapshot("s") },
	} {
		if err := fn(); !errors.Is(err, ErrStaleEpoch) {
			t.Errorf("stale %s: %v, want ErrStaleEpoch", name, err)
		}
	}
	equalBytes(t, "chain after stale writes", mustRead(t, c, 0, 8192), a)
	if c.Size() != 4*mib || len(c.Snapshots()) != 0 {
		t.Errorf("stale grow or snapshot changed the chain: size %d, %d snapshots", c.Size(), len(c.Snapshots()))
	}
	if l1.Size() != 4*mib {
		t.Errorf("stale Size = %d", l1.Size())
	}
	mustWrite(t, l2, b, 0)
	equalBytes(t, "epoch-2 write", mustRead(t, c, 0, 8192), b)

	// NewLocal is unfenced: existing single-replica callers keep working.
	u := NewLocal(c)
	if u.Fence() != nil || u.Chain() != c {
		t.Fatal("NewLocal has a fence or another chain")
	}
	mustWrite(t, u, a, 0)
	if err := u.Snapshot("s1"); err != nil {
		t.Fatal(err)
	}
	if err := u.Grow(8 * mib); err != nil {
		t.Fatal(err)
	}
}

// TestLocalFencingConcurrent races writers at epoch 1 against an Open at
// epoch 2: every write acknowledged is in the chain, and once Open has
// returned, nothing the epoch-1 writers do changes the chain.
func TestLocalFencingConcurrent(t *testing.T) {
	p, dir := newPool(t)
	c, err := p.Create("vol", 16*mib)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := OpenEpochs(filepath.Join(dir, "epochs"))
	if err != nil {
		t.Fatal(err)
	}
	l1, err := OpenLocal(c, ep, 1)
	if err != nil {
		t.Fatal(err)
	}
	const writers = 8
	var wg sync.WaitGroup
	stop := make(chan struct{})
	acked := make([][]int, writers) // per writer, iterations acknowledged
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				off := int64(w*256+i%256) * chain.BlockSize
				if _, err := l1.WriteAt(pattern(chain.BlockSize, byte(w*31+i)), off); err == nil {
					acked[w] = append(acked[w], i)
				} else if !errors.Is(err, ErrStaleEpoch) {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	if _, err := OpenLocal(c, ep, 2); err != nil {
		t.Fatal(err)
	}
	fenced := mustRead(t, c, 0, 16*mib)
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
	equalBytes(t, "chain after the fence", mustRead(t, c, 0, 16*mib), fenced)
	for w := 0; w < writers; w++ {
		if len(acked[w]) == 0 {
			continue
		}
		// The last acknowledged write of each block is what it holds.
		last := map[int]int{}
		for _, i := range acked[w] {
			last[i%256] = i
		}
		for blk, i := range last {
			off := int64(w*256+blk) * chain.BlockSize
			equalBytes(t, "acknowledged write", fenced[off:off+chain.BlockSize], pattern(chain.BlockSize, byte(w*31+i)))
		}
	}
}
