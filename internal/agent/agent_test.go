package agent

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/strata-storage/strata/internal/errdefs"
)

const mib = 1 << 20

func openAgent(t *testing.T) *Agent {
	t.Helper()
	dir := t.TempDir()
	a, err := Open(Config{PoolDir: filepath.Join(dir, "pool"), FuseDir: filepath.Join(dir, "fuse")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func TestExportsCountConnections(t *testing.T) {
	a := openAgent(t)
	if _, err := a.Create("v", mib); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ex := a.Exports()
	if _, _, err := ex.Open(ctx, "missing"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("open of a missing export: %v", err)
	}
	names, err := ex.Names(ctx)
	if err != nil || len(names) != 1 || names[0] != "v" {
		t.Fatalf("names: %v %v", names, err)
	}
	b1, rel1, err := ex.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	_, rel2, err := ex.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := a.Status("v"); st.Connections != 2 {
		t.Fatalf("connections %d, want 2", st.Connections)
	}
	if _, err := b1.WriteAt([]byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	for _, op := range []struct {
		name string
		fn   func() error
	}{
		{"delete", func() error { return a.Delete("v") }},
		{"revert", func() error { _, err := a.Revert("v", "s"); return err }},
	} {
		if op.name == "revert" {
			if _, err := a.Snapshot("v", "s"); err != nil {
				t.Fatal(err)
			}
		}
		err := op.fn()
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "2 nbd connection") {
			t.Fatalf("%s while exported: %v", op.name, err)
		}
	}
	rel1()
	rel1() // a second release must not count twice
	if st, _ := a.Status("v"); st.Connections != 1 {
		t.Fatalf("connections %d after one release, want 1", st.Connections)
	}
	rel2()
	if err := a.Delete("v"); err != nil {
		t.Fatalf("delete when idle: %v", err)
	}
	if _, _, err := ex.Open(ctx, "v"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("open of a deleted export: %v", err)
	}
	if err := a.Delete("v"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("delete of a deleted volume: %v", err)
	}
}

func TestRevertReopensEngine(t *testing.T) {
	a := openAgent(t)
	ctx := context.Background()
	if _, err := a.Create("v", mib); err != nil {
		t.Fatal(err)
	}
	b, rel, err := a.Exports().Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Repeat([]byte{1}, 4096)
	if _, err := b.WriteAt(old, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Snapshot("v", "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt(bytes.Repeat([]byte{2}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	rel()
	if _, err := a.Revert("v", "missing"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("revert to a missing snapshot: %v", err)
	}
	if _, err := a.Revert("v", "s"); err != nil {
		t.Fatal(err)
	}
	// The old engine is detached; a new connection gets a new one.
	if _, err := b.WriteAt([]byte{3}, 0); err == nil {
		t.Fatal("write through the engine of before the revert succeeded")
	}
	b, rel, err = a.Exports().Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer rel()
	got := make([]byte, 4096)
	if _, err := b.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, old) {
		t.Fatalf("read %x..., want %x...", got[:4], old[:4])
	}
}

func TestResizeAndClone(t *testing.T) {
	a := openAgent(t)
	if _, err := a.Create("v", 2*mib); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Resize("v", mib); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("shrink: %v", err)
	}
	if info, err := a.Resize("v", 2*mib); err != nil || info.Size != 2*mib {
		t.Fatalf("same size: %v %v", info, err)
	}
	// Grow while exported goes through the engine.
	b, rel, err := a.Exports().Open(context.Background(), "v")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := a.Resize("v", 3*mib); err != nil || info.Size != 3*mib || b.Size() != 3*mib {
		t.Fatalf("grow: %v %v (engine sees %d)", info, err, b.Size())
	}
	rel()
	if _, err := a.Clone("v", "nope", "c", 0); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("clone of a missing snapshot: %v", err)
	}
	if _, err := a.Clone("nope", "s", "c", 0); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("clone of a missing volume: %v", err)
	}
	if _, err := a.Snapshot("v", "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Clone("v", "s", "c", mib); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("clone smaller than the snapshot: %v", err)
	}
	info, err := a.Clone("v", "s", "c", 0)
	if err != nil || info.Size != 3*mib || info.Parent != "v@s" {
		t.Fatalf("clone: %+v %v", info, err)
	}
	res, err := a.DeleteSnapshot("v", "s")
	if err != nil || res.KeptForClones != 1 {
		t.Fatalf("delete snapshot used by a clone: %+v %v", res, err)
	}
}

func TestConcurrentOpens(t *testing.T) {
	a := openAgent(t)
	if _, err := a.Create("v", mib); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, rel, err := a.Exports().Open(context.Background(), "v")
			if err != nil {
				t.Error(err)
				return
			}
			b.WriteAt([]byte{byte(i)}, int64(i)*4096)
			rel()
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.Status("v")
		}()
	}
	wg.Wait()
	if st, _ := a.Status("v"); st.Connections != 0 {
		t.Fatalf("connections %d after every release", st.Connections)
	}
}

func TestMountRefusals(t *testing.T) {
	a := openAgent(t)
	if _, err := a.Create("v", mib); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Mount(context.Background(), "v", MountOptions{Target: "relative"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("mount at a relative path: %v", err)
	}
	if _, err := a.Unmount("/not/mounted"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("unmount of nothing: %v", err)
	}
}

func TestLastIO(t *testing.T) {
	a := openAgent(t)
	if _, err := a.Create("v", mib); err != nil {
		t.Fatal(err)
	}
	if !a.LastIO("v").IsZero() || !a.LastIO("missing").IsZero() {
		t.Fatal("I/O before any")
	}
	b, rel, err := a.Exports().Open(context.Background(), "v")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt([]byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	rel()
	last := a.LastIO("v")
	if last.IsZero() {
		t.Fatal("no I/O seen after a write")
	}
	// A revert restarts the engine; the last I/O is remembered.
	if _, err := a.Snapshot("v", "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Revert("v", "s"); err != nil {
		t.Fatal(err)
	}
	if got := a.LastIO("v"); !got.Equal(last) {
		t.Fatalf("LastIO after a revert = %v, want %v", got, last)
	}
}
