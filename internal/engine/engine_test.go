package engine

import (
	"bytes"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"
)

// memReplica is an in-memory replica for testing the engine's logic.
type memReplica struct {
	mu       sync.Mutex
	data     []byte
	snaps    []string
	reverts  []string
	failWith error
	flushes  int
}

func newMem(size int) *memReplica { return &memReplica{data: make([]byte, size)} }

func (m *memReplica) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(p, m.data[off:]), nil
}

func (m *memReplica) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failWith != nil {
		return 0, m.failWith
	}
	return copy(m.data[off:], p), nil
}

func (m *memReplica) Flush() error { m.mu.Lock(); m.flushes++; m.mu.Unlock(); return nil }
func (m *memReplica) Trim(off, n int64) error {
	return m.WriteZeroes(off, n)
}
func (m *memReplica) WriteZeroes(off, n int64) error {
	_, err := m.WriteAt(make([]byte, n), off)
	return err
}
func (m *memReplica) Size() int64 { return int64(len(m.data)) }
func (m *memReplica) Grow(size int64) error {
	m.data = append(m.data, make([]byte, size-int64(len(m.data)))...)
	return nil
}
func (m *memReplica) Snapshot(name string) error { m.snaps = append(m.snaps, name); return nil }

// Revert fails with failWith; a model of the content since the snapshot
// is not kept (the chain's conformance tests cover revert itself).
func (m *memReplica) Revert(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failWith != nil {
		return m.failWith
	}
	m.reverts = append(m.reverts, name)
	return nil
}

func TestWritesReachEveryReplica(t *testing.T) {
	a, b := newMem(1<<20), newMem(1<<20)
	v, err := New("vol", a, b)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := v.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 4096), int64(i)*4096); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := v.WriteZeroes(0, 4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.data, b.data) {
		t.Fatal("replicas differ after writes")
	}
	if a.data[4096] != 2 || a.data[0] != 0 {
		t.Fatalf("unexpected content %d %d", a.data[4096], a.data[0])
	}
	if err := v.Snapshot("s1"); err != nil {
		t.Fatal(err)
	}
	if len(a.snaps) != 1 || len(b.snaps) != 1 || a.flushes == 0 || b.flushes == 0 {
		t.Fatalf("snapshot must flush then seal every replica: %v %v %d %d", a.snaps, b.snaps, a.flushes, b.flushes)
	}
	if err := v.Grow(2 << 20); err != nil || v.Size() != 2<<20 || b.Size() != 2<<20 {
		t.Fatalf("grow: %v size %d/%d", err, v.Size(), b.Size())
	}
}

func TestAFailingReplicaFailsTheWrite(t *testing.T) {
	a, b := newMem(1<<16), newMem(1<<16)
	b.failWith = syscall.ENOSPC
	v, _ := New("vol", a, b)
	if _, err := v.WriteAt([]byte{1}, 0); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write with a full replica: %v, want ENOSPC", err)
	}
}

func TestClosedEngineRefusesIO(t *testing.T) {
	v, _ := New("vol", newMem(4096))
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := v.WriteAt([]byte{1}, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if _, err := v.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if err := v.Snapshot("s"); !errors.Is(err, ErrClosed) {
		t.Fatalf("snapshot after close: %v", err)
	}
}

func TestNoReplica(t *testing.T) {
	if _, err := New("vol"); err == nil {
		t.Fatal("an engine without replicas was accepted")
	}
}

func TestLastIO(t *testing.T) {
	v, _ := New("vol", newMem(8192))
	if !v.LastIO().IsZero() {
		t.Fatal("a new engine has seen I/O")
	}
	v.Flush() // moves no data: not I/O for the idle clock
	if !v.LastIO().IsZero() {
		t.Fatal("a flush counts as I/O")
	}
	// Each kind of I/O, on an engine of its own, starts the clock.
	for i, io := range []func(v *Volume) error{
		func(v *Volume) error { _, err := v.ReadAt(make([]byte, 512), 0); return err },
		func(v *Volume) error { _, err := v.WriteAt(make([]byte, 512), 0); return err },
		func(v *Volume) error { return v.Trim(0, 4096) },
		func(v *Volume) error { return v.WriteZeroes(0, 4096) },
	} {
		v, _ := New("vol", newMem(8192))
		before := time.Now()
		if err := io(v); err != nil {
			t.Fatal(err)
		}
		if got := v.LastIO(); got.Before(before) || got.After(time.Now()) {
			t.Fatalf("I/O %d: LastIO %v, want between %v and now", i, got, before)
		}
	}
	// The clock moves at most once per lastIOGrain.
	v.WriteAt(make([]byte, 512), 0)
	first := v.LastIO()
	if first.IsZero() {
		t.Fatal("no I/O seen after a write")
	}
	v.WriteAt(make([]byte, 512), 0)
	if got := v.LastIO(); !got.Equal(first) {
		t.Fatalf("LastIO moved from %v to %v within %v", first, got, time.Duration(lastIOGrain))
	}
}
