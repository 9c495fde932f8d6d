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
			e, dev, target, size := growEnv(t, fsType)
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

// growEnv skips the test without root or the tools that make and grow
// fsType, and returns an environment with a device the filesystem accepts
// and a target to mount it at.
func growEnv(t *testing.T, fsType string) (e *env, dev *fileDevice, target string, size int64) {
	t.Helper()
	if fsType == "xfs" {
		requireRoot(t, "mkfs.xfs", "xfs_growfs")
	} else {
		requireRoot(t, "mkfs.ext4", "resize2fs", "e2fsck")
	}
	e = newEnv(t)
	size = fsSize(fsType)
	dev = newFileDevice(t, filepath.Join(e.dir, "vol.img"), size)
	return e, dev, filepath.Join(e.dir, "mnt", "vol"), size
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

// TestGrowWhileUnmounted grows the device while the volume is not mounted:
// the next Mount grows the filesystem to fill it (ext4 before mounting,
// without CAP_SYS_RESOURCE; xfs once mounted), and keeps the files.
func TestGrowWhileUnmounted(t *testing.T) {
	for _, fsType := range []string{"ext4", "xfs"} {
		t.Run(fsType, func(t *testing.T) {
			e, dev, target, size := growEnv(t, fsType)
			m, err := Mount(context.Background(), dev, Options{Name: "vol", StateDir: e.stateDir, Target: target, FSType: fsType})
			if err != nil {
				t.Fatal(err)
			}
			files := writeFiles(t, target, 4096, mib+3)
			before := fsBytes(t, target)
			unmount(t, m)
			if got, _ := superblockSize(dev, fsType); got > size || got < size/2 {
				t.Fatalf("superblock says %d bytes on a %d-byte device", got, size)
			}

			if err := dev.f.Truncate(size * 3); err != nil {
				t.Fatal(err)
			}
			dev.size = size * 3
			m = e.mount(t, dev, "vol", target, "")
			if after := fsBytes(t, target); after < before*2 {
				t.Fatalf("filesystem is %d bytes after the device grew 3x while unmounted (was %d)", after, before)
			}
			checkFiles(t, target, files)
			// Already full: Grow has nothing to do, and needs no capability.
			if err := m.Grow(context.Background()); err != nil {
				t.Fatalf("grow of a filesystem that fills its device: %v", err)
			}
		})
	}
}
