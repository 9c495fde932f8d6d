package fusefile

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/strata-storage/strata/internal/errdefs"
)

// TestMap maps a device as a raw block device: what is written to the loop
// device reaches the device, growth reaches the loop device, a mapped name
// cannot be mounted, and Unmap leaves nothing behind.
func TestMap(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	dev := newFileDevice(t, filepath.Join(e.dir, "vol.img"), 16*mib)
	m, err := Map(context.Background(), dev, MapOptions{Name: "vol", StateDir: e.stateDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Unmap() })
	if got := loopBytes(t, m.LoopDevice()); got != 16*mib {
		t.Fatalf("loop device is %d bytes, want %d", got, 16*mib)
	}
	payload := randomBytes(t, 8192)
	f, err := os.OpenFile(m.LoopDevice(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(payload, 3*mib); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got := make([]byte, len(payload))
	if _, err := dev.ReadAt(got, 3*mib); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("device does not hold what was written to %s: %v", m.LoopDevice(), err)
	}

	if _, err := Map(context.Background(), dev, MapOptions{Name: "vol", StateDir: e.stateDir}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("second Map of a mapped name: %v, want failed precondition", err)
	}
	target := filepath.Join(e.dir, "mnt")
	if _, err := Mount(context.Background(), dev, Options{Name: "vol", StateDir: e.stateDir, Target: target}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Mount of a mapped name: %v, want failed precondition", err)
	}

	if err := dev.f.Truncate(32 * mib); err != nil {
		t.Fatal(err)
	}
	dev.size = 32 * mib
	if err := m.Grow(); err != nil {
		t.Fatal(err)
	}
	if got := loopBytes(t, m.LoopDevice()); got != 32*mib {
		t.Fatalf("loop device is %d bytes after Grow, want %d", got, 32*mib)
	}
	// Written without a sync: Unmap writes it back.
	unsynced := randomBytes(t, 4096)
	if f, err = os.OpenFile(m.LoopDevice(), os.O_RDWR, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(unsynced, 20*mib); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := m.Unmap(); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.ReadAt(got[:len(unsynced)], 20*mib); err != nil || !bytes.Equal(got[:len(unsynced)], unsynced) {
		t.Fatalf("a write not synced before Unmap is lost: %v", err)
	}
	if err := m.Unmap(); err != nil {
		t.Fatalf("second Unmap: %v", err)
	}
	if err := m.Grow(); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Grow after Unmap: %v, want failed precondition", err)
	}
	// The name is free again.
	m2, err := Map(context.Background(), dev, MapOptions{Name: "vol", StateDir: e.stateDir, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m2.Unmap() })
	if f, err := os.OpenFile(m2.LoopDevice(), os.O_RDWR, 0); err == nil {
		_, werr := f.WriteAt(payload, 0)
		if werr == nil {
			werr = f.Sync()
		}
		f.Close()
		if werr == nil {
			t.Fatal("a read-only map took a write")
		}
	}
	if err := m2.Unmap(); err != nil {
		t.Fatal(err)
	}
}
