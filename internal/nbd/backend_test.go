package nbd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-storage/strata/internal/errdefs"
)

// fileBackend is a sparse file: the smallest real device to serve.
type fileBackend struct {
	f    *os.File
	size int64

	// counters of calls that reached the backend
	reads, writes, flushes, trims, zeroes atomic.Int64

	// test hooks, set before serving
	beforeRead func(off int64)
	fastZero   atomic.Bool
}

func newFileBackend(t testing.TB, size int64) *fileBackend {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	b := &fileBackend{f: f, size: size}
	b.fastZero.Store(true)
	return b
}

func (b *fileBackend) ReadAt(p []byte, off int64) (int, error) {
	b.reads.Add(1)
	if b.beforeRead != nil {
		b.beforeRead(off)
	}
	return b.f.ReadAt(p, off)
}

func (b *fileBackend) WriteAt(p []byte, off int64) (int, error) {
	b.writes.Add(1)
	return b.f.WriteAt(p, off)
}

func (b *fileBackend) Flush() error {
	b.flushes.Add(1)
	return b.f.Sync()
}

func (b *fileBackend) Trim(off, length int64) error {
	b.trims.Add(1)
	return unix.Fallocate(int(b.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

func (b *fileBackend) WriteZeroes(off, length int64) error {
	b.zeroes.Add(1)
	err := unix.Fallocate(int(b.f.Fd()), unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = unix.Fallocate(int(b.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	}
	return err
}

func (b *fileBackend) Size() int64 { return b.size }

func (b *fileBackend) FastZero() bool { return b.fastZero.Load() }

func (b *fileBackend) calls() int64 {
	return b.reads.Load() + b.writes.Load() + b.flushes.Load() + b.trims.Load() + b.zeroes.Load()
}

// testExports serves named backends and counts opens and releases.
type testExports struct {
	mu       sync.Mutex
	backends map[string]Backend
	opens    atomic.Int64
	releases atomic.Int64
	openErr  error
}

func newTestExports(backends map[string]Backend) *testExports {
	return &testExports{backends: backends}
}

func (e *testExports) Open(ctx context.Context, name string) (Backend, func(), error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.openErr != nil {
		return nil, nil, e.openErr
	}
	be, ok := e.backends[name]
	if !ok {
		return nil, nil, fmt.Errorf("volume %q: %w", name, errdefs.ErrNotFound)
	}
	e.opens.Add(1)
	var once atomic.Bool
	return be, func() {
		if once.Swap(true) {
			panic("release called twice")
		}
		e.releases.Add(1)
	}, nil
}

func (e *testExports) Names(ctx context.Context) ([]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var names []string
	for n := range e.backends {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// startServer serves exports on a loopback port until the test ends, and
// fails the test if Serve does not return promptly after its context ends.
func startServer(t testing.TB, exports Exports, opts ...Option) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(exports, opts...).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Serve did not return after its context ended")
		}
	})
	return ln.Addr().String()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
