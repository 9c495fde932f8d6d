package replica

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/strata-storage/strata/internal/errdefs"
)

// dirtyOf reads volume's dirty regions through a fresh Epochs over the
// node's directory, as a restarted node would find them.
func dirtyOf(t *testing.T, n *node, volume string) []int64 {
	t.Helper()
	ep, err := OpenEpochs(filepath.Join(n.dir, "epochs"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ep.DirtyRegions(volume)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// rg is the log's region, the unit of the tests' offsets.
const rg = DirtyRegion

func wantRegions(t *testing.T, what string, got []int64, want ...int64) {
	t.Helper()
	for i := range want {
		want[i] *= DirtyRegion
	}
	if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Fatalf("%s: dirty regions %v, want %v", what, got, want)
	}
}

// TestDirtyLogPersistsBeforeWrites: the regions a fenced write touches are
// in the log's file when the write returns, and checkpoints keep exactly
// those written since the previous checkpoint.
func TestDirtyLogPersistsBeforeWrites(t *testing.T) {
	n := startNode(t)
	c := n.create("vol", 16*rg)
	l, err := OpenLocal(c, n.epochs, 1)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, l, pattern(4096, 1), 0)
	mustWrite(t, l, pattern(8192, 2), 5*rg-4096) // spans regions 4 and 5
	if err := l.WriteZeroes(9*rg, 2*rg); err != nil {
		t.Fatal(err)
	}
	wantRegions(t, "after writes", dirtyOf(t, n, "vol"), 0, 4, 5, 9, 10)

	// The first checkpoint keeps what was written since (no previous one).
	if err := l.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	wantRegions(t, "after one checkpoint", dirtyOf(t, n, "vol"), 0, 4, 5, 9, 10)
	if err := l.Trim(2*rg, 4096); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, l, pattern(10, 3), 4*rg)
	if err := l.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	wantRegions(t, "after a second checkpoint", dirtyOf(t, n, "vol"), 2, 4)
	if err := l.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	wantRegions(t, "after a third checkpoint", dirtyOf(t, n, "vol"))

	// Writing a region already listed updates no file.
	mustWrite(t, l, pattern(4096, 4), 7*rg)
	before := n.epochs.vol("vol").dirty.writes
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := l.WriteAt(pattern(512, byte(i)), 7*rg+int64(i)*4096); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if after := n.epochs.vol("vol").dirty.writes; after != before {
		t.Fatalf("writes to a listed region updated the file %d times", after-before)
	}

	// Out-of-range requests fail in the chain and list nothing past the end.
	if err := l.Trim(15*rg, 1<<62); err == nil {
		t.Fatal("a trim past the end succeeded")
	}
	if got := dirtyOf(t, n, "vol"); got[len(got)-1] != 15*rg {
		t.Fatalf("after a trim past the end: %v", got)
	}
	// An unfenced replica keeps no log.
	c2 := n.create("plain", 4*rg)
	mustWrite(t, NewLocal(c2), pattern(4096, 5), 0)
	wantRegions(t, "unfenced", dirtyOf(t, n, "plain"))

	// Dropping the log removes its file; the epoch stays.
	if err := n.epochs.DropDirty("vol"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(n.dir, "epochs", "vol.dirty")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("log file after DropDirty: %v", err)
	}
	if e, _ := n.epochs.Current("vol"); e != 1 {
		t.Fatalf("epoch after DropDirty: %d", e)
	}
}

// TestDirtyLogCorrupt: a log file that does not check out makes every
// region suspect until a checkpoint, and is never read as empty.
func TestDirtyLogCorrupt(t *testing.T) {
	n := startNode(t)
	c := n.create("vol", 8*rg)
	l, err := OpenLocal(c, n.epochs, 1)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, l, pattern(4096, 1), 3*rg)
	path := filepath.Join(n.dir, "epochs", "vol.dirty")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-9] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	n.stop()
	n.start()
	if _, err := n.epochs.DirtyRegions("vol"); !errors.Is(err, ErrDirtyUnknown) {
		t.Fatalf("corrupt log: %v, want ErrDirtyUnknown", err)
	}
	ctl := n.control()
	if _, err := ctl.DirtyRegions(context.Background(), "vol"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("corrupt log over the wire: %v, want failed precondition", err)
	}
	l, err = OpenLocal(c, n.epochs, 2)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, l, pattern(4096, 2), 6*rg)
	if _, err := n.epochs.DirtyRegions("vol"); !errors.Is(err, ErrDirtyUnknown) {
		t.Fatalf("corrupt log after a write: %v, want ErrDirtyUnknown still", err)
	}
	if err := l.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	wantRegions(t, "after a checkpoint", dirtyOf(t, n, "vol"), 6)
}

// TestDirtyLogOverTheWire: remote writes mark the server's log, the
// engine's checkpoint goes through the fence, and Control reads the log.
func TestDirtyLogOverTheWire(t *testing.T) {
	checkNoLeaks(t)
	n := startNode(t)
	n.create("vol", 8*rg)
	r := n.dial("vol", 1)
	ctl := n.control()
	ctx := context.Background()
	mustWrite(t, r, pattern(4096, 1), 2*rg)
	if err := r.Trim(6*rg, rg); err != nil {
		t.Fatal(err)
	}
	got, err := ctl.DirtyRegions(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	wantRegions(t, "over the wire", got, 2, 6)
	if err := r.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := r.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	got, _ = ctl.DirtyRegions(ctx, "vol")
	wantRegions(t, "after two checkpoints", got)
	if _, err := ctl.DirtyRegions(ctx, "zz"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("dirty regions of a missing volume: %v, want not found", err)
	}
	// A stale engine can neither write nor checkpoint.
	r2 := n.dial("vol", 2)
	mustWrite(t, r2, pattern(4096, 2), 5*rg)
	if err := r.Checkpoint(); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("stale checkpoint: %v, want ErrStaleEpoch", err)
	}
	got, _ = ctl.DirtyRegions(ctx, "vol")
	wantRegions(t, "after a stale checkpoint", got, 5)
	// Deleting the volume drops its log.
	if err := ctl.Delete(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(n.dir, "epochs", "vol.dirty")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("log file after delete: %v", err)
	}
}
