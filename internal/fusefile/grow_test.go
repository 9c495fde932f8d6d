package fusefile

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-storage/strata/internal/errdefs"
)

// TestGrowOnline grows the device under a mounted filesystem and checks that
// the filesystem grows with it, online, and that its files are intact.
func TestGrowOnline(t *testing.T) {
	for _, fsType := range []string{"ext4", "xfs"} {
		t.Run(fsType, func(t *testing.T) {
			requireRoot(t, "mkfs."+fsType)
			if fsType == "xfs" {
				requireRoot(t, "xfs_growfs")
			} else {
				requireRoot(t, "resize2fs")
			}
			e := newEnv(t)
			size := fsSize(fsType)
			dev := newFileDevice(t, filepath.Join(e.dir, "vol.img"), size)
			target := filepath.Join(e.dir, "mnt", "vol")
			m := e.mount(t, dev, "vol", target, fsType)
			files := writeFiles(t, target, 0, 1, 4096, mib+3)
			before := fsBytes(t, target)

			if err := m.Grow(context.Background()); err != nil {
				t.Fatalf("grow to the same size: %v", err)
			}
			if err := dev.f.Truncate(size * 4); err != nil {
				t.Fatal(err)
			}
			dev.size = size * 4
			err := m.Grow(context.Background())
			if fsType == "ext4" && !hasCapSysResource() {
				// This sandbox drops CAP_SYS_RESOURCE: the device grows,
				// the filesystem cannot, and the error says so.
				if err == nil || !strings.Contains(err.Error(), "CAP_SYS_RESOURCE") {
					t.Fatalf("grow ext4 without CAP_SYS_RESOURCE: %v", err)
				}
				if got := loopBytes(t, m.LoopDevice()); got != size*4 {
					t.Fatalf("loop device is %d bytes after grow, want %d", got, size*4)
				}
				unmount(t, m)
				t.Skip("ext4 online resize needs CAP_SYS_RESOURCE, which this process lacks; device growth checked")
			}
			if err != nil {
				t.Fatal(err)
			}
			after := fsBytes(t, target)
			if after < before*3 {
				t.Fatalf("filesystem is %d bytes after growing the device 4x (was %d)", after, before)
			}
			// Space past the old end is usable, and the old files are intact.
			big := make([]byte, size) // more than the old filesystem could hold
			if err := os.WriteFile(filepath.Join(target, "big"), big, 0o644); err != nil {
				t.Fatalf("write past the old size: %v", err)
			}
			syncfs(t, target)
			checkFiles(t, target, files)

			dev.size = size
			if err := m.Grow(context.Background()); !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Fatalf("grow to a smaller device: %v, want failed precondition", err)
			}
			dev.size = size * 4
			unmount(t, m)
			if err := m.Grow(context.Background()); !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Fatalf("grow after unmount: %v, want failed precondition", err)
			}
			m = e.mount(t, dev, "vol", target, "")
			checkFiles(t, target, files)
			unmount(t, m)
		})
	}
}

func loopBytes(t *testing.T, dev string) int64 {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func fsBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * st.Bsize
}
