// Package engine runs one attached volume: it is what frontends (NBD, FUSE)
// read and write, and it fans every write out to the volume's replicas,
// acknowledging it only when every in-sync replica has it. Snapshots are
// taken at one point of the write stream on every replica.
package engine

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/qos"
)

// Replica is one copy of a volume's data: the local chain today, a remote
// replica server over the data protocol once replication lands.
type Replica interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Flush() error
	Trim(off, length int64) error
	WriteZeroes(off, length int64) error
	Size() int64
	Grow(size int64) error
	Snapshot(name string) error
}

// ErrClosed is returned by every call on a closed engine.
var ErrClosed = fmt.Errorf("engine: volume is detached: %w", errdefs.ErrUnavailable)

// Volume is the engine of one attached volume. It is safe for concurrent use.
type Volume struct {
	name string
	// io is held shared by every I/O and exclusively by operations that need
	// a quiet point in the write stream (snapshot, grow, close).
	io       sync.RWMutex
	closed   bool
	replicas []Replica
	// qos throttles I/O before it takes io, so that waiting requests hold
	// up neither snapshots nor Close.
	qos *limiter
	// lastIO is when the last read, write, trim or write-zeroes came, in
	// Unix nanoseconds (the clone controller's idle clock).
	lastIO atomic.Int64
}

// lastIOGrain is the resolution of LastIO: the clock is written at most
// once per grain, so that concurrent I/O does not contend on its cache line
// (idle expiry is counted in minutes and hours).
const lastIOGrain = int64(time.Second)

// touch records that I/O came now.
func (v *Volume) touch() {
	now := time.Now().UnixNano()
	if now-v.lastIO.Load() >= lastIOGrain {
		v.lastIO.Store(now)
	}
}

// LastIO returns when the last read, write, trim or write-zeroes came, to
// within lastIOGrain; the zero time if none has.
func (v *Volume) LastIO() time.Time {
	if n := v.lastIO.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// New returns the engine of volume name over its replicas; the first one is
// the replica reads are served from.
func New(name string, replicas ...Replica) (*Volume, error) {
	if len(replicas) == 0 {
		return nil, fmt.Errorf("engine: volume %q has no replica: %w", name, errdefs.ErrFailedPrecondition)
	}
	return &Volume{name: name, replicas: replicas, qos: newLimiter(nil)}, nil
}

// SetLimits changes the volume's I/O limits, at once: requests waiting
// under the old limits are re-evaluated against the new ones. The zero
// Limits removes every limit. See qos.Limits for how requests are counted.
func (v *Volume) SetLimits(l qos.Limits) error {
	if err := l.Validate(); err != nil {
		return fmt.Errorf("engine: volume %q: %w", v.name, err)
	}
	v.qos.set(l)
	return nil
}

// Limits returns the limits in force.
func (v *Volume) Limits() qos.Limits { return v.qos.get() }

// Name returns the volume's name.
func (v *Volume) Name() string { return v.name }

// Size returns the volume's size in bytes.
func (v *Volume) Size() int64 {
	v.io.RLock()
	defer v.io.RUnlock()
	return v.replicas[0].Size()
}

// ReadAt reads from the first replica.
func (v *Volume) ReadAt(p []byte, off int64) (int, error) {
	if err := v.qos.acquire(dirRead, qos.Ops(len(p)), int64(len(p))); err != nil {
		return 0, err
	}
	v.io.RLock()
	defer v.io.RUnlock()
	if v.closed {
		return 0, ErrClosed
	}
	v.touch()
	return v.replicas[0].ReadAt(p, off)
}

// WriteAt writes p to every replica and returns when all have it.
func (v *Volume) WriteAt(p []byte, off int64) (int, error) {
	if err := v.qos.acquire(dirWrite, qos.Ops(len(p)), int64(len(p))); err != nil {
		return 0, err
	}
	v.io.RLock()
	defer v.io.RUnlock()
	if v.closed {
		return 0, ErrClosed
	}
	v.touch()
	err := v.each(func(r Replica) error { _, err := r.WriteAt(p, off); return err })
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush makes every acknowledged write durable on every replica. It is
// not limited by QoS: it moves no data.
func (v *Volume) Flush() error {
	v.io.RLock()
	defer v.io.RUnlock()
	if v.closed {
		return ErrClosed
	}
	return v.each(Replica.Flush)
}

// Trim discards the range on every replica. Under QoS it counts as one
// write operation, whatever its length, and no bandwidth (so does
// WriteZeroes).
func (v *Volume) Trim(off, length int64) error {
	if err := v.qos.acquire(dirWrite, 1, 0); err != nil {
		return err
	}
	v.io.RLock()
	defer v.io.RUnlock()
	if v.closed {
		return ErrClosed
	}
	v.touch()
	return v.each(func(r Replica) error { return r.Trim(off, length) })
}

// WriteZeroes zeroes the range on every replica.
func (v *Volume) WriteZeroes(off, length int64) error {
	if err := v.qos.acquire(dirWrite, 1, 0); err != nil {
		return err
	}
	v.io.RLock()
	defer v.io.RUnlock()
	if v.closed {
		return ErrClosed
	}
	v.touch()
	return v.each(func(r Replica) error { return r.WriteZeroes(off, length) })
}

// Snapshot waits for in-flight I/O, flushes, and seals every replica's head
// as snapshot name at the same point of the write stream.
func (v *Volume) Snapshot(name string) error {
	v.io.Lock()
	defer v.io.Unlock()
	if v.closed {
		return ErrClosed
	}
	if err := v.each(Replica.Flush); err != nil {
		return err
	}
	return v.each(func(r Replica) error { return r.Snapshot(name) })
}

// Grow raises the size of every replica.
func (v *Volume) Grow(size int64) error {
	v.io.Lock()
	defer v.io.Unlock()
	if v.closed {
		return ErrClosed
	}
	return v.each(func(r Replica) error { return r.Grow(size) })
}

// Close flushes and detaches the engine; later calls fail with ErrClosed,
// and so do requests waiting for their QoS limit. Closing twice is a no-op.
func (v *Volume) Close() error {
	v.qos.close()
	v.io.Lock()
	defer v.io.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	return v.each(Replica.Flush)
}

// each runs fn on every replica and joins their errors. With one replica
// this is a plain call; fan-out runs the replicas in parallel.
func (v *Volume) each(fn func(Replica) error) error {
	if len(v.replicas) == 1 {
		return fn(v.replicas[0])
	}
	errs := make([]error, len(v.replicas))
	var wg sync.WaitGroup
	for i, r := range v.replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(r)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
