package chain

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/strata-storage/strata/internal/errdefs"
)

// smallFS mounts a fresh 64 MiB ext4 filesystem on a loop device and returns
// its mount point; it skips the test when that is not possible here.
func smallFS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("ENOSPC test needs root to mount a loop device")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("ENOSPC test needs mkfs.ext4")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(64 << 20)
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4 failed: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a loop device here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	return mnt
}

func TestENOSPC(t *testing.T) {
	mnt := smallFS(t)
	p, err := OpenPool(filepath.Join(mnt, "pool"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	keep := mustCreate(t, p, "keep", 16*mib)
	mustWrite(t, keep, pattern(8*mib, 1), 0)
	if err := keep.Flush(); err != nil {
		t.Fatal(err)
	}
	other := mustCreate(t, p, "other", 64*mib)
	mustWrite(t, other, pattern(20*mib, 2), 0)
	other.Flush()
	if _, err := keep.Snapshot("s1"); err != nil {
		t.Fatal(err)
	}

	v := mustCreate(t, p, "v", 128*mib)
	chunk := pattern(mib, 3)
	var off int64
	var werr error
	for off = 0; off < 128*mib; off += mib {
		if _, werr = v.WriteAt(chunk, off); werr != nil {
			break
		}
		if off%(4*mib) == 0 {
			if werr = v.Flush(); werr != nil {
				break
			}
		}
	}
	if !errors.Is(werr, errdefs.ErrNoSpace) {
		t.Fatalf("filling the pool: %v, want ENOSPC", werr)
	}
	t.Logf("ENOSPC after %d MiB: %v", off/mib, werr)
	// Flushed data reads back; the chain still serves reads and small
	// operations that need no space.
	if got := readAll(t, keep, 0, 8*mib); !bytes.Equal(got, pattern(8*mib, 1)) {
		t.Fatal("flushed data of keep lost")
	}
	flushed := off / (4 * mib) * (4 * mib)
	for o := int64(0); o < flushed; o += mib {
		if got := readAll(t, v, o, mib); !bytes.Equal(got, chunk) {
			t.Fatalf("flushed MiB %d of v lost", o/mib)
		}
	}
	if _, err := v.WriteAt(chunk, off); !errors.Is(err, errdefs.ErrNoSpace) {
		t.Fatalf("second write: %v, want ENOSPC", err)
	}

	// Give space back: the writes succeed again.
	if err := p.Delete("other"); err != nil {
		t.Fatal(err)
	}
	for o := off; o < off+8*mib; o += mib {
		if _, err := v.WriteAt(chunk, o); err != nil {
			t.Fatalf("write after freeing space: %v", err)
		}
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, v, off, mib); !bytes.Equal(got, chunk) {
		t.Fatal("write after ENOSPC did not stick")
	}
	if _, err := v.Snapshot("after"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, keep, 0, 8*mib); !bytes.Equal(got, pattern(8*mib, 1)) {
		t.Fatal("keep changed")
	}
}
