package agent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/strata-storage/strata/internal/errdefs"
)

// TestMapVolume maps a volume as a block device: writes through the device
// reach the volume, the device grows with the volume, a mapped volume can be
// neither mounted, deleted nor reverted, and Unmap frees it.
func TestMapVolume(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (FUSE, loop devices)")
	}
	a := openAgent(t)
	ctx := context.Background()
	if _, err := a.Create("v", 8*mib); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Snapshot("v", "s"); err != nil {
		t.Fatal(err)
	}
	if err := a.Unmap("v"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("unmap of a volume not mapped: %v", err)
	}
	m, err := a.Map(ctx, "v", false)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := a.Map(ctx, "v", false); err != nil || again.Device != m.Device {
		t.Fatalf("second map: %+v %v, want %s", again, err, m.Device)
	}
	if st, _ := a.Status("v"); len(st.Devices) != 1 || st.Devices[0] != m.Device {
		t.Fatalf("status devices %v, want [%s]", st.Devices, m.Device)
	}
	payload := bytes.Repeat([]byte("strata"), 1000)
	f, err := os.OpenFile(m.Device, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(payload, mib); err != nil {
		t.Fatal(err)
	}
	f.Close()

	for _, op := range []struct {
		name string
		fn   func() error
	}{
		{"delete", func() error { return a.Delete("v") }},
		{"revert", func() error { _, err := a.Revert("v", "s"); return err }},
		{"mount", func() error {
			_, err := a.Mount(ctx, "v", MountOptions{Target: filepath.Join(t.TempDir(), "m")})
			return err
		}},
	} {
		if err := op.fn(); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "mapped") {
			t.Fatalf("%s while mapped: %v", op.name, err)
		}
	}
	if _, err := a.Resize("v", 16*mib); err != nil {
		t.Fatal(err)
	}
	if n := deviceSize(t, m.Device); n != 16*mib {
		t.Fatalf("device is %d bytes after resize, want %d", n, 16*mib)
	}
	if err := a.Unmap("v"); err != nil {
		t.Fatal(err)
	}
	// What was written through the device is the volume's.
	b, rel, err := a.Exports().Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(payload))
	_, err = b.ReadAt(got, mib)
	rel()
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("volume does not hold what was written to the device: %v", err)
	}
	if err := a.Delete("v"); err != nil {
		t.Fatalf("delete after unmap: %v", err)
	}
}

// deviceSize reads the size of a block device from sysfs.
func deviceSize(t *testing.T, dev string) int64 {
	t.Helper()
	b, err := os.ReadFile("/sys/class/block/" + filepath.Base(dev) + "/size")
	if err != nil {
		t.Fatal(err)
	}
	sectors, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return sectors * 512
}
