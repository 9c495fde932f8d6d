package fusefile

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-storage/strata/internal/errdefs"
)

const mib = 1 << 20

// fileDevice is a Device backed by a sparse file.
type fileDevice struct {
	f      *os.File
	size   int64
	trims  atomic.Int64
	writes atomic.Int64
}

func newFileDevice(t *testing.T, path string, size int64) *fileDevice {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &fileDevice{f: f, size: size}
}

func (d *fileDevice) ReadAt(p []byte, off int64) (int, error) { return d.f.ReadAt(p, off) }
func (d *fileDevice) WriteAt(p []byte, off int64) (int, error) {
	d.writes.Add(1)
	return d.f.WriteAt(p, off)
}
func (d *fileDevice) Flush() error { return unix.Fdatasync(int(d.f.Fd())) }
func (d *fileDevice) Size() int64  { return d.size }
func (d *fileDevice) Trim(off, length int64) error {
	d.trims.Add(1)
	return unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

// allocated returns the bytes the backing file takes on disk.
func (d *fileDevice) allocated(t *testing.T) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(d.f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func requireRoot(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("fusefile tests need root (FUSE, loop devices, mount)")
	}
	for _, p := range []string{"/dev/fuse", "/dev/loop-control"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("fusefile tests need %s: %v", p, err)
		}
	}
	for _, tl := range append([]string{"blkid", "mkfs.ext4"}, tools...) {
		if _, err := tool(tl); err != nil {
			t.Skipf("fusefile tests need %s", tl)
		}
	}
}

type env struct {
	dir      string
	stateDir string
}

func newEnv(t *testing.T) *env {
	dir := t.TempDir()
	e := &env{dir: dir, stateDir: filepath.Join(dir, "state")}
	// Runs before TempDir's removal (cleanups run last in, first out): a
	// test that failed half way must not leave mounts for RemoveAll to
	// walk into.
	t.Cleanup(func() { e.checkNothingLeft(t) })
	return e
}

// checkNothingLeft fails the test when a mount or a loop device of ours is
// still there, then tears them down.
func (e *env) checkNothingLeft(t *testing.T) {
	t.Helper()
	ms, err := mounts()
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for i := len(ms) - 1; i >= 0; i-- {
		if strings.HasPrefix(ms[i].MountPoint, e.dir+"/") {
			left = append(left, ms[i].MountPoint)
			unix.Unmount(ms[i].MountPoint, unix.MNT_DETACH)
		}
	}
	if len(left) > 0 {
		t.Errorf("mounts left behind: %v", left)
	}
	if loops := e.loops(); len(loops) > 0 {
		t.Errorf("loop devices left behind: %v", loops)
	}
}

// loops lists the loop devices whose backing file is under the test's dir.
func (e *env) loops() []string {
	dirs, _ := filepath.Glob("/sys/block/loop*")
	var out []string
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "loop", "backing_file"))
		if err == nil && strings.HasPrefix(string(b), e.dir+"/") {
			out = append(out, filepath.Base(d)+"="+strings.TrimSpace(string(b)))
		}
	}
	return out
}

func (e *env) mount(t *testing.T, dev Device, name, target, fsType string) *Mounted {
	t.Helper()
	m, err := Mount(context.Background(), dev, Options{Name: name, StateDir: e.stateDir, Target: target, FSType: fsType})
	if err != nil {
		t.Fatalf("Mount %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("cleanup: Unmount %s: %v", name, err)
		}
	})
	return m
}

func unmount(t *testing.T, m *Mounted) {
	t.Helper()
	if err := m.Unmount(); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
}

func syncfs(t *testing.T, dir string) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// writeFiles writes files of random content under dir and returns them.
func writeFiles(t *testing.T, dir string, sizes ...int) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for i, n := range sizes {
		p := filepath.Join(dir, fmt.Sprintf("file%d", i))
		b := randomBytes(t, n)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = b
	}
	return files
}

func checkFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: content differs (%d bytes read, %d written)", name, len(got), len(want))
		}
	}
}

// fsSize is a device size each filesystem accepts (xfs wants 300 MB).
func fsSize(fsType string) int64 {
	if fsType == "xfs" {
		return 320 * mib
	}
	return 64 * mib
}

func TestMountFormatRemount(t *testing.T) {
	for _, fsType := range []string{"ext4", "xfs"} {
		t.Run(fsType, func(t *testing.T) {
			requireRoot(t, "mkfs."+fsType)
			e := newEnv(t)
			dev := newFileDevice(t, filepath.Join(e.dir, "vol.img"), fsSize(fsType))
			target := filepath.Join(e.dir, "mnt", "vol")

			m := e.mount(t, dev, "vol", target, fsType)
			if !m.Formatted() || m.FSType() != fsType {
				t.Fatalf("first mount: formatted %v, type %q; want a new %s", m.Formatted(), m.FSType(), fsType)
			}
			if !strings.HasPrefix(m.LoopDevice(), "/dev/loop") || m.Device() != filepath.Join(e.stateDir, "vol", "fuse", "vol") {
				t.Fatalf("loop %q, device %q", m.LoopDevice(), m.Device())
			}
			t.Logf("loop %s direct I/O %v", m.LoopDevice(), m.DirectIO())
			files := writeFiles(t, target, 0, 1, 4096, 3*mib+17)
			syncfs(t, target)
			unmount(t, m)
			unmount(t, m) // idempotent
			if _, err := os.Stat(filepath.Join(e.stateDir, "vol")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("state dir left after Unmount: %v", err)
			}
			if len(e.loops()) != 0 {
				t.Fatalf("loop devices left after Unmount: %v", e.loops())
			}

			// The default FSType mounts whatever is there.
			m = e.mount(t, dev, "vol", target, "")
			if m.Formatted() || m.FSType() != fsType {
				t.Fatalf("second mount: formatted %v, type %q; want the existing %s", m.Formatted(), m.FSType(), fsType)
			}
			checkFiles(t, target, files)
			unmount(t, m)
		})
	}
}

func TestCloneMountedAlongside(t *testing.T) {
	for _, fsType := range []string{"xfs", "ext4"} {
		t.Run(fsType, func(t *testing.T) {
			requireRoot(t, "mkfs."+fsType)
			e := newEnv(t)
			orig := filepath.Join(e.dir, "orig.img")
			dev := newFileDevice(t, orig, fsSize(fsType))
			a := filepath.Join(e.dir, "a")
			m := e.mount(t, dev, "orig", a, fsType)
			files := writeFiles(t, a, 5*mib)
			unmount(t, m)

			// A clone: a copy of the device, same filesystem UUID.
			clonePath := filepath.Join(e.dir, "clone.img")
			if out, err := exec.Command("cp", "--sparse=always", orig, clonePath).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v: %s", err, out)
			}
			clone := newFileDevice(t, clonePath, fsSize(fsType))

			m = e.mount(t, dev, "orig", a, fsType)
			b := filepath.Join(e.dir, "b")
			mc := e.mount(t, clone, "clone", b, "")
			if mc.Formatted() {
				t.Fatal("clone was formatted")
			}
			checkFiles(t, a, files)
			checkFiles(t, b, files)

			// They are independent.
			onlyA := writeFiles(t, a, mib)
			if err := os.WriteFile(filepath.Join(b, "file0"), []byte("clone"), 0o644); err != nil {
				t.Fatal(err)
			}
			unmount(t, m)
			unmount(t, mc)
			m = e.mount(t, dev, "orig", a, "")
			checkFiles(t, a, onlyA)
			mc = e.mount(t, clone, "clone", b, "")
			checkFiles(t, b, map[string][]byte{"file0": []byte("clone")})
			unmount(t, m)
			unmount(t, mc)
		})
	}
}

func TestDiscardReachesDevice(t *testing.T) {
	requireRoot(t, "fstrim")
	e := newEnv(t)
	dev := newFileDevice(t, filepath.Join(e.dir, "vol.img"), 128*mib)
	target := filepath.Join(e.dir, "mnt")
	m := e.mount(t, dev, "vol", target, "ext4")
	writeFiles(t, target, 48*mib)
	syncfs(t, target)
	full := dev.allocated(t)
	if err := os.Remove(filepath.Join(target, "file0")); err != nil {
		t.Fatal(err)
	}
	syncfs(t, target)
	trims := dev.trims.Load()
	if out, err := exec.Command("fstrim", target).CombinedOutput(); err != nil {
		t.Fatalf("fstrim: %v: %s", err, out)
	}
	after := dev.allocated(t)
	t.Logf("backing file: %d MiB allocated before fstrim, %d MiB after; %d trims", full/mib, after/mib, dev.trims.Load()-trims)
	if dev.trims.Load() == trims {
		t.Fatal("fstrim sent no Trim to the device")
	}
	if full-after < 40*mib {
		t.Fatalf("fstrim freed %d MiB of the backing file, want at least 40", (full-after)/mib)
	}
	unmount(t, m)
}

func TestRefusals(t *testing.T) {
	requireRoot(t, "mkfs.xfs")
	e := newEnv(t)
	dev := newFileDevice(t, filepath.Join(e.dir, "vol.img"), 64*mib)
	ctx := context.Background()

	t.Run("bad options", func(t *testing.T) {
		for _, o := range []Options{
			{Name: "vol", StateDir: e.stateDir, Target: filepath.Join(e.dir, "t"), FSType: "btrfs"},
			{Name: "a/b", StateDir: e.stateDir, Target: filepath.Join(e.dir, "t")},
			{Name: "vol", Target: filepath.Join(e.dir, "t")},
			{Name: "vol", StateDir: e.stateDir},
		} {
			if _, err := Mount(ctx, dev, o); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("Mount(%+v) = %v, want ErrInvalidArgument", o, err)
			}
		}
		if _, err := os.Stat(filepath.Join(e.dir, "t")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("target made for a refused mount: %v", err)
		}
	})

	t.Run("target is a mount point", func(t *testing.T) {
		target := filepath.Join(e.dir, "tmpfs")
		if err := os.Mkdir(target, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", target, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		defer unix.Unmount(target, 0)
		_, err := Mount(ctx, dev, Options{Name: "vol", StateDir: e.stateDir, Target: target})
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("Mount on a mount point = %v, want ErrFailedPrecondition", err)
		}
	})

	target := filepath.Join(e.dir, "mnt")
	t.Run("busy", func(t *testing.T) {
		m := e.mount(t, dev, "vol", target, "ext4")
		f, err := os.Create(filepath.Join(target, "open"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := m.Unmount(); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("Unmount while a file is open = %v, want ErrFailedPrecondition", err)
		}
		// Still working.
		if _, err := f.WriteString("still here"); err != nil {
			t.Fatal(err)
		}
		f.Close()
		unmount(t, m)
		if b, err := os.ReadFile(filepath.Join(target, "open")); err == nil || len(b) > 0 {
			t.Fatal("target still mounted after Unmount")
		}
	})

	t.Run("explicit type differs", func(t *testing.T) {
		_, err := Mount(ctx, dev, Options{Name: "vol", StateDir: e.stateDir, Target: target, FSType: "xfs"})
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "ext4") {
			t.Fatalf("Mount xfs of an ext4 device = %v, want ErrFailedPrecondition naming ext4", err)
		}
		if typ, _, err := probe(ctx, filepath.Join(e.dir, "vol.img")); err != nil || typ != "ext4" {
			t.Fatalf("device after refused mount: %q, %v; want ext4 untouched", typ, err)
		}
	})

	t.Run("data that is not a filesystem", func(t *testing.T) {
		raw := newFileDevice(t, filepath.Join(e.dir, "raw.img"), 64*mib)
		if _, err := raw.WriteAt([]byte("precious"), 4096); err != nil {
			t.Fatal(err)
		}
		_, err := Mount(ctx, raw, Options{Name: "raw", StateDir: e.stateDir, Target: filepath.Join(e.dir, "raw")})
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("Mount of a device with data = %v, want ErrFailedPrecondition", err)
		}
		b := make([]byte, 8)
		raw.ReadAt(b, 4096)
		if string(b) != "precious" {
			t.Fatal("data overwritten")
		}
	})

	t.Run("same name twice", func(t *testing.T) {
		m := e.mount(t, dev, "vol", target, "")
		_, err := Mount(ctx, dev, Options{Name: "vol", StateDir: e.stateDir, Target: filepath.Join(e.dir, "other")})
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("second Mount of one name = %v, want ErrFailedPrecondition", err)
		}
		unmount(t, m)
	})
}

func TestMkfsFailureLeavesNothing(t *testing.T) {
	requireRoot(t, "mkfs.xfs")
	e := newEnv(t)
	dev := newFileDevice(t, filepath.Join(e.dir, "tiny.img"), 1*mib)
	target := filepath.Join(e.dir, "a", "b")
	_, err := Mount(context.Background(), dev, Options{Name: "tiny", StateDir: e.stateDir, Target: target, FSType: "xfs"})
	if err == nil {
		t.Fatal("mkfs.xfs of 1 MiB succeeded")
	}
	t.Logf("Mount: %v", err)
	if loops := e.loops(); len(loops) > 0 {
		t.Fatalf("loop devices left behind: %v", loops)
	}
	ms, _ := mounts()
	for _, m := range ms {
		if strings.HasPrefix(m.MountPoint, e.dir+"/") {
			t.Fatalf("mount left behind: %s", m.MountPoint)
		}
	}
	for _, p := range []string{filepath.Join(e.dir, "a"), filepath.Join(e.stateDir, "tiny")} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left behind: %v", p, err)
		}
	}
	if z, err := headerIsZero(dev); err != nil || !z {
		t.Fatalf("device header not zero after failed mkfs: %v %v", z, err)
	}
}

func TestConcurrentWriters(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	dev := newFileDevice(t, filepath.Join(e.dir, "vol.img"), 256*mib)
	target := filepath.Join(e.dir, "mnt")
	m := e.mount(t, dev, "vol", target, "ext4")

	const writers = 8
	sums := make([][32]byte, writers)
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Create(filepath.Join(target, fmt.Sprintf("w%d", i)))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			h := sha256.New()
			buf := make([]byte, 256<<10)
			for range 24 {
				rand.Read(buf)
				h.Write(buf)
				if _, err := f.Write(buf); err != nil {
					errs <- err
					return
				}
			}
			if err := f.Sync(); err != nil {
				errs <- err
			}
			copy(sums[i][:], h.Sum(nil))
		}()
	}
	// And dd with direct I/O alongside.
	wg.Add(1)
	go func() {
		defer wg.Done()
		out, err := exec.Command("dd", "if=/dev/urandom", "of="+filepath.Join(target, "dd"), "bs=1M", "count=16", "oflag=direct", "status=none").CombinedOutput()
		if err != nil {
			errs <- fmt.Errorf("dd: %v: %s", err, out)
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ddWant, err := os.ReadFile(filepath.Join(target, "dd"))
	if err != nil {
		t.Fatal(err)
	}
	unmount(t, m)

	m = e.mount(t, dev, "vol", target, "")
	for i := range writers {
		f, err := os.Open(filepath.Join(target, fmt.Sprintf("w%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(h.Sum(nil), sums[i][:]) {
			t.Fatalf("w%d differs after remount", i)
		}
	}
	checkFiles(t, target, map[string][]byte{"dd": ddWant})
	unmount(t, m)
}

// TestCleanupAfterCrash mounts in a child process that then dies without
// unmounting, and checks that Cleanup clears what it left and that the
// volume mounts again with the data it had flushed.
func TestCleanupAfterCrash(t *testing.T) {
	if os.Getenv("FUSEFILE_CRASH_CHILD") != "" {
		crashChild()
		return
	}
	requireRoot(t)
	e := newEnv(t)
	img := filepath.Join(e.dir, "vol.img")
	newFileDevice(t, img, 64*mib)
	target := filepath.Join(e.dir, "mnt")

	cmd := exec.Command(os.Args[0], "-test.run=^TestCleanupAfterCrash$")
	cmd.Env = append(os.Environ(), "FUSEFILE_CRASH_CHILD=1", "FUSEFILE_IMG="+img, "FUSEFILE_STATE="+e.stateDir, "FUSEFILE_TARGET="+target)
	out, err := cmd.CombinedOutput()
	if !strings.Contains(string(out), "MOUNTED") {
		t.Fatalf("child: %v: %s", err, out)
	}

	// What the crash left: a stale FUSE mount, a loop device, the target.
	if mp, _ := isMountPoint(target); !mp {
		t.Fatal("target not mounted after the crash")
	}
	if !stale(filepath.Join(e.stateDir, "vol", "fuse")) {
		t.Fatal("FUSE mount not stale after the crash")
	}
	if err := Cleanup(e.stateDir); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(e.loops()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("loop devices left after Cleanup: %v", e.loops())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if mp, _ := isMountPoint(target); mp {
		t.Fatal("target still mounted after Cleanup")
	}
	if _, err := os.Stat(filepath.Join(e.stateDir, "vol")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state dir left after Cleanup: %v", err)
	}

	dev := newFileDevice(t, img, 64*mib)
	m := e.mount(t, dev, "vol", target, "")
	if m.Formatted() {
		t.Fatal("volume reformatted after the crash")
	}
	checkFiles(t, target, map[string][]byte{"synced": []byte("made it")})
	unmount(t, m)
	if err := Cleanup(e.stateDir); err != nil {
		t.Fatalf("Cleanup with nothing to do: %v", err)
	}
}

func crashChild() {
	f, err := os.OpenFile(os.Getenv("FUSEFILE_IMG"), os.O_RDWR, 0)
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	st, _ := f.Stat()
	dev := &fileDevice{f: f, size: st.Size()}
	target := os.Getenv("FUSEFILE_TARGET")
	if _, err := Mount(context.Background(), dev, Options{Name: "vol", StateDir: os.Getenv("FUSEFILE_STATE"), Target: target}); err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	if err := os.WriteFile(filepath.Join(target, "synced"), []byte("made it"), 0o644); err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	fd, _ := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	unix.Syncfs(fd)
	fmt.Println("MOUNTED")
	os.Stdout.Sync()
	unix.Kill(os.Getpid(), unix.SIGKILL) // the crash: no Unmount, no cleanup
	select {}
}

// TestFUSEFile checks the FUSE file alone: reads and writes reach the
// device, punch-hole trims, zero-range zeroes, and the size is fixed.
func TestFUSEFile(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	dev := newFileDevice(t, filepath.Join(e.dir, "vol.img"), 8*mib)
	mnt := filepath.Join(e.dir, "fuse")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	srv, err := startFUSE(mnt, "vol", dev, false)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.abort()

	// Open without Go's poller: os.OpenFile would register the descriptor
	// with epoll, and epoll_ctl on a FUSE file asks the FUSE server (this
	// very process) to answer a POLL request, which can deadlock the test.
	fd, err := unix.Open(filepath.Join(mnt, "vol"), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "vol") // a blocking descriptor: not put in the poller
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.Size() != 8*mib {
		t.Fatalf("stat: %v, %v; want size %d", st, err, 8*mib)
	}
	data := bytes.Repeat([]byte("strata!!"), 3*mib/8)
	if _, err := f.WriteAt(data, mib); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := dev.ReadAt(got, mib); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("device does not hold what was written: %v", err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}

	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, mib, mib); err != nil {
		t.Fatalf("punch hole: %v", err)
	}
	if dev.trims.Load() != 1 {
		t.Fatalf("%d trims, want 1", dev.trims.Load())
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, 2*mib, mib); err != nil {
		t.Fatalf("zero range: %v", err)
	}
	if _, err := f.ReadAt(got, mib); err != nil {
		t.Fatal(err)
	}
	want := append(make([]byte, 2*mib), data[2*mib:]...)
	if !bytes.Equal(got, want) {
		t.Fatal("trimmed and zeroed ranges do not read as zeroes")
	}
	// Punch hole still works after zero range (the kernel stops sending
	// fallocate for good after one ENOSYS).
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 4096); err != nil {
		t.Fatalf("punch hole: %v", err)
	}

	if err := f.Truncate(mib); err == nil {
		t.Fatal("truncate succeeded")
	}
	if _, err := f.WriteAt([]byte("x"), 8*mib); err == nil {
		t.Fatal("write past the end succeeded")
	}
	if n, err := f.ReadAt(got[:100], 8*mib-50); n != 50 || err != io.EOF {
		t.Fatalf("read across the end: %d, %v; want 50, EOF", n, err)
	}
	f.Close()
	if err := srv.stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestReadOnly(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	dev := newFileDevice(t, filepath.Join(e.dir, "vol.img"), 64*mib)
	target := filepath.Join(e.dir, "mnt")
	ro := Options{Name: "vol", StateDir: e.stateDir, Target: target, ReadOnly: true}

	if _, err := Mount(context.Background(), dev, ro); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("read-only Mount of an empty device = %v, want ErrFailedPrecondition", err)
	}
	if z, _ := headerIsZero(dev); !z || dev.writes.Load() != 0 {
		t.Fatal("read-only Mount wrote to the device")
	}

	m := e.mount(t, dev, "vol", target, "")
	files := writeFiles(t, target, 100000)
	unmount(t, m)

	writes := dev.writes.Load()
	m, err := Mount(context.Background(), dev, ro)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmount()
	checkFiles(t, target, files)
	if err := os.WriteFile(filepath.Join(target, "new"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Fatalf("write on a read-only mount = %v, want EROFS", err)
	}
	unmount(t, m)
	if dev.writes.Load() != writes {
		t.Fatalf("read-only mount wrote %d times to the device", dev.writes.Load()-writes)
	}
}

func TestStateDirThroughSymlink(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	real := filepath.Join(e.dir, "real")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(e.dir, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	dev := newFileDevice(t, filepath.Join(e.dir, "vol.img"), 64*mib)
	target := filepath.Join(link, "target") // through the link too
	m, err := Mount(context.Background(), dev, Options{Name: "vol", StateDir: link, Target: target})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmount()
	if m.Target() != filepath.Join(real, "target") {
		t.Fatalf("Target() = %q", m.Target())
	}
	// A live mount of this process is not stale.
	if err := Cleanup(link); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.Device()); err != nil {
		t.Fatalf("Cleanup touched a live mount: %v", err)
	}
	_, err = Mount(context.Background(), dev, Options{Name: "vol", StateDir: real, Target: filepath.Join(e.dir, "other")})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("second Mount of one name through another path = %v, want ErrFailedPrecondition", err)
	}
	unmount(t, m)
}

// TestLoopDiscardAndZeroes checks the loop device's two ways of zeroing:
// discard arrives as punch-hole (Trim), write-zeroes as zero-range.
func TestLoopDiscardAndZeroes(t *testing.T) {
	requireRoot(t, "blkdiscard")
	e := newEnv(t)
	dev := newFileDevice(t, filepath.Join(e.dir, "vol.img"), 8*mib)
	if _, err := dev.WriteAt(bytes.Repeat([]byte{1}, 8*mib), 0); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(e.dir, "fuse")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	srv, err := startFUSE(mnt, "vol", dev, false)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.abort()
	backing := filepath.Join(mnt, "vol")
	l, err := attachLoop(backing, false)
	if err != nil {
		t.Fatal(err)
	}
	defer l.detach()

	if out, err := exec.Command("blkdiscard", "-z", "-o", fmt.Sprint(1*mib), "-l", fmt.Sprint(mib), l.path).CombinedOutput(); err != nil {
		t.Fatalf("blkdiscard -z: %v: %s", err, out)
	}
	if out, err := exec.Command("blkdiscard", "-o", fmt.Sprint(3*mib), "-l", fmt.Sprint(mib), l.path).CombinedOutput(); err != nil {
		t.Fatalf("blkdiscard: %v: %s", err, out)
	}
	if dev.trims.Load() == 0 {
		t.Fatal("discard did not reach Trim")
	}
	b := make([]byte, 8*mib)
	if _, err := dev.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		wantZero := i == 1 || i == 3
		if isZero := bytes.Equal(b[i*mib:(i+1)*mib], make([]byte, mib)); isZero != wantZero {
			t.Errorf("MiB %d: zero %v, want %v", i, isZero, wantZero)
		}
	}
	l.detach()
	if !waitLoopDetached(l.number, backing, 5*time.Second) {
		t.Fatal("loop device still attached after detach")
	}
	if err := srv.stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// failingDevice fails every read and write.
type failingDevice struct{ *fileDevice }

func (failingDevice) ReadAt(p []byte, off int64) (int, error)  { return 0, unix.EIO }
func (failingDevice) WriteAt(p []byte, off int64) (int, error) { return 0, unix.EIO }

func TestFailedMountLeavesNothing(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		dev  func() Device
	}{
		{"device fails", context.Background(), func() Device {
			return failingDevice{newFileDevice(t, filepath.Join(e.dir, "bad.img"), 64*mib)}
		}},
		{"context canceled", canceled, func() Device {
			return newFileDevice(t, filepath.Join(e.dir, "ok.img"), 64*mib)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := filepath.Join(e.dir, "target")
			_, err := Mount(tc.ctx, tc.dev(), Options{Name: "vol", StateDir: e.stateDir, Target: target})
			if err == nil {
				t.Fatal("Mount succeeded")
			}
			t.Logf("Mount: %v", err)
			if loops := e.loops(); len(loops) > 0 {
				t.Fatalf("loop devices left behind: %v", loops)
			}
			for _, p := range []string{target, filepath.Join(e.stateDir, "vol")} {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%s left behind: %v", p, err)
				}
			}
		})
	}
}
