package nbddev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/nbd"
	"github.com/strata-storage/strata/internal/nbd/nbdtest"
)

type memExports map[string]*nbdtest.Mem

func (e memExports) Open(ctx context.Context, name string) (nbd.Backend, func(), error) {
	b, ok := e[name]
	if !ok {
		return nil, nil, fmt.Errorf("volume %q: %w", name, errdefs.ErrNotFound)
	}
	return b, func() {}, nil
}

func (e memExports) Names(ctx context.Context) ([]string, error) { return nil, nil }

// needKernelNBD skips the test unless it runs as root on a kernel with the
// nbd module (test/vm runs it in a VM that has one).
func needKernelNBD(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if err := Available(); err != nil {
		t.Skipf("kernel NBD client unavailable: %v", err)
	}
}

func TestAttachWriteGrowDetach(t *testing.T) {
	needKernelNBD(t)
	be := nbdtest.NewMem(8 << 20)
	a := New(nbd.NewServer(memExports{"vol": be}), t.TempDir())
	d, err := a.Attach(context.Background(), "vol", false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Detach()
	if size, err := deviceSize(d.Index()); err != nil || size != 8<<20 {
		t.Fatalf("device size %d (%v), want %d", size, err, 8<<20)
	}

	f, err := os.OpenFile(d.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	copy(buf, "written through /dev/nbd")
	if _, err := f.WriteAt(buf, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 24)
	be.ReadAt(got, 1<<20)
	if string(got) != "written through /dev/nbd" {
		t.Fatalf("backend holds %q", got)
	}

	be.Grow(16 << 20)
	if err := d.Grow(16 << 20); err != nil {
		t.Fatal(err)
	}
	if size, _ := deviceSize(d.Index()); size != 16<<20 {
		t.Fatalf("device size %d after Grow, want %d", size, 16<<20)
	}
	if err := d.Grow(8 << 20); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("shrinking: %v, want ErrFailedPrecondition", err)
	}
	be.WriteAt([]byte("past the old end"), 12<<20)
	rb := make([]byte, 4096)
	if _, err := f.ReadAt(rb, 12<<20); err != nil || !bytes.HasPrefix(rb, []byte("past the old end")) {
		t.Fatalf("read past the old end: %q, %v", rb[:16], err)
	}

	// Open elsewhere: Detach waits, fails, and finishes after the close.
	defer func(w time.Duration) { detachWait = w }(detachWait)
	detachWait = time.Second
	if err := d.Detach(); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Detach of an open device: %v, want ErrFailedPrecondition", err)
	}
	f.Close()
	if err := d.Detach(); err != nil {
		t.Fatal(err)
	}
	if got := sysfs(d.Index(), "backend"); got != "" {
		t.Fatalf("device still has backend %q", got)
	}
}

func TestAttachUnknownExport(t *testing.T) {
	needKernelNBD(t)
	a := New(nbd.NewServer(memExports{}), t.TempDir())
	if _, err := a.Attach(context.Background(), "missing", false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Attach of a missing export: %v, want ErrNotFound", err)
	}
}

func TestAttachReadOnly(t *testing.T) {
	needKernelNBD(t)
	be := nbdtest.NewMem(1 << 20)
	a := New(nbd.NewServer(memExports{"vol": be}), t.TempDir())
	d, err := a.Attach(context.Background(), "vol", true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Detach()
	if ro := sysfs(d.Index(), "ro"); ro != "1" {
		t.Fatalf("/sys/block/nbd%d/ro is %q, want 1", d.Index(), ro)
	}
	f, err := os.OpenFile(d.Path(), os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteAt(make([]byte, 4096), 0)
		if err == nil {
			err = f.Sync()
		}
		f.Close()
	}
	if err == nil {
		t.Fatal("a write to a read-only device succeeded")
	}
}

// TestCleanup leaves a device behind as a dead process would (its server
// gone, its descriptor closed, a holder keeping the device open as a
// mounted filesystem does), and checks that Cleanup of the same identity
// disconnects it and that of another identity does not.
func TestCleanup(t *testing.T) {
	needKernelNBD(t)
	be := nbdtest.NewMem(1 << 20)
	id := t.TempDir()
	a := New(nbd.NewServer(memExports{"vol": be}), id)
	d, err := a.Attach(context.Background(), "vol", false)
	if err != nil {
		t.Fatal(err)
	}
	holder, err := os.Open(d.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	d.cancel()
	<-d.served
	unix.Close(d.fd)
	d.fd = -1

	if err := Cleanup(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if sysfs(d.Index(), "backend") == "" {
		t.Fatal("Cleanup of another identity disconnected the device")
	}
	if err := Cleanup(id); err != nil {
		t.Fatal(err)
	}
	holder.Close()
	if !waitDetached(d.Index(), d.backend, detachWait) {
		t.Fatalf("device still has backend %q after Cleanup", d.backend)
	}
}
