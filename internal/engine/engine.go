// Package engine runs one attached volume: it is what frontends (NBD, FUSE)
// read and write, and it fans every write out to the volume's replicas,
// acknowledging it only when every in-sync replica has it. Snapshots are
// taken at one point of the write stream on every replica.
package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
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
	// Revert drops every write since snapshot name, the replica's
	// latest; the size goes back to the snapshot's.
	Revert(name string) error
}

// ErrClosed is returned by every call on a closed engine.
var ErrClosed = fmt.Errorf("engine: volume is detached: %w", errdefs.ErrUnavailable)

// Member is a replica of the volume together with the node that holds it.
type Member struct {
	Node    string
	Replica Replica
}

// Extent is a byte range of the volume.
type Extent struct {
	Offset int64
	Length int64
}

// Config is how a replicated engine changes its replica set. Every change
// of the in-sync set is committed by the caller (a compare-and-swap of the
// volume's record in etcd that raises its epoch) before the engine acts on
// it: the engine acknowledges no write that skipped a replica until Drop
// has returned (invariant 2).
type Config struct {
	// Drop commits that node's replica leaves the in-sync set after cause.
	// An error fails the I/O that met the cause: the replica stays a
	// member (for instance when it is the last in-sync one, or etcd cannot
	// be reached). nil Drop fails every I/O a replica fails.
	Drop func(node string, cause error) error
	// Join commits that node's replica, caught up, is in sync again.
	Join func(node string) error
	// Local is the node of the replica reads prefer (this node's own).
	Local string
}

// set is the engine's replica set, replaced as a whole on every change
// (copy on write) so that I/O reads it without a lock.
type set struct {
	// members are the in-sync replicas; every write goes to all of them
	// and reads go to the first.
	members []Member
	// catching are replicas being caught up: writes go to them too, but
	// their failures fail nothing.
	catching []Member
	// missed holds, for every replica this engine dropped or is catching
	// up, the blocks it lacks.
	missed map[string]*dirtySet
}

func (s *set) member(node string) bool {
	for _, m := range s.members {
		if m.Node == node {
			return true
		}
	}
	return false
}

// Volume is the engine of one attached volume. It is safe for concurrent use.
type Volume struct {
	name string
	cfg  Config
	// io is held shared by every I/O and exclusively by operations that need
	// a quiet point in the write stream (snapshot, grow, close, the copy
	// of a catch-up batch).
	io     sync.RWMutex
	closed bool
	// set is the current replica set; setMu serializes its changes.
	set   atomic.Pointer[set]
	setMu sync.Mutex
	// qos throttles I/O before it takes io, so that waiting requests hold
	// up neither snapshots nor Close.
	qos *limiter
	// lastIO is when the last read, write, trim or write-zeroes came, in
	// Unix nanoseconds (the clone controller's idle clock).
	lastIO atomic.Int64
	// changed says the replicas changed since the last Checkpoint.
	changed atomic.Bool
}

// Checkpointer is a replica that keeps a dirty-region log (see
// Volume.Checkpoint).
type Checkpointer interface {
	Checkpoint() error
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

// New returns the engine of volume name over its replicas, every one
// required: a replica that fails an I/O fails it. The first one is the
// replica reads are served from.
func New(name string, replicas ...Replica) (*Volume, error) {
	ms := make([]Member, len(replicas))
	for i, r := range replicas {
		ms[i] = Member{Replica: r}
	}
	return NewReplicated(name, ms, Config{})
}

// NewReplicated returns the engine of volume name over its in-sync
// replicas; reads go to the first (put the local one first). cfg says how
// replicas leave and rejoin the in-sync set.
func NewReplicated(name string, members []Member, cfg Config) (*Volume, error) {
	if len(members) == 0 {
		return nil, fmt.Errorf("engine: volume %q has no in-sync replica: %w", name, errdefs.ErrFailedPrecondition)
	}
	v := &Volume{name: name, cfg: cfg, qos: newLimiter(nil)}
	v.set.Store(&set{members: slices.Clone(members), missed: map[string]*dirtySet{}})
	return v, nil
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
	return v.set.Load().members[0].Replica.Size()
}

// ReadAt reads from the first in-sync replica; a replica that fails the
// read leaves the in-sync set and the next one serves it.
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
	for {
		s := v.set.Load()
		m := s.members[0]
		n, err := m.Replica.ReadAt(p, off)
		if err == nil || !v.droppable(err) {
			return n, err
		}
		if derr := v.drop(m.Node, err); derr != nil {
			return n, derr
		}
	}
}

// WriteAt writes p to every in-sync replica and returns when all have it.
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
	err := v.each(off, int64(len(p)), func(r Replica) error { _, err := r.WriteAt(p, off); return err })
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
	return v.each(0, 0, Replica.Flush)
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
	return v.each(off, length, func(r Replica) error { return r.Trim(off, length) })
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
	return v.each(off, length, func(r Replica) error { return r.WriteZeroes(off, length) })
}

// ErrCatchingUp refuses a snapshot while a replica is being caught up: its
// head is not yet the same as the others', so it cannot seal the same layer.
var ErrCatchingUp = fmt.Errorf("engine: a replica is catching up; snapshot again when it is in sync: %w", errdefs.ErrUnavailable)

// ErrDegraded refuses a snapshot while a replica this engine dropped is
// out: it would miss the snapshot's layer, which every replica must hold
// byte-identical (invariant 4).
var ErrDegraded = fmt.Errorf("engine: a replica is out of sync; snapshot again when it is back or replaced: %w", errdefs.ErrUnavailable)

// Snapshot waits for in-flight I/O, flushes, and seals every replica's head
// as snapshot name at the same point of the write stream. It is refused
// while a replica is out or catching up (every replica must seal the same
// layer).
func (v *Volume) Snapshot(name string) error {
	v.io.Lock()
	defer v.io.Unlock()
	if v.closed {
		return ErrClosed
	}
	s := v.set.Load()
	if len(s.catching) > 0 {
		return ErrCatchingUp
	}
	if len(s.missed) > 0 {
		return ErrDegraded
	}
	if err := v.each(0, 0, Replica.Flush); err != nil {
		return err
	}
	return v.each(0, 0, func(r Replica) error { return r.Snapshot(name) })
}

// Revert drops every write since snapshot name on every in-sync replica,
// at a quiet point of the write stream. It is refused while a replica
// catches up. A replica that fails the revert leaves the in-sync set like
// one that fails a write; neither it nor a replica already out is tracked
// afterwards, since the blocks they lack are no longer those they missed:
// their catch-up lists what either side changed since the snapshot.
func (v *Volume) Revert(name string) error {
	v.io.Lock()
	defer v.io.Unlock()
	if v.closed {
		return ErrClosed
	}
	if len(v.set.Load().catching) > 0 {
		return ErrCatchingUp
	}
	v.changed.Store(true)
	err := v.each(0, 0, func(r Replica) error { return r.Revert(name) })
	v.setMu.Lock()
	defer v.setMu.Unlock()
	if s := v.set.Load(); len(s.missed) > 0 {
		v.set.Store(&set{members: s.members, catching: s.catching, missed: map[string]*dirtySet{}})
	}
	return err
}

// Checkpoint waits for the I/O in flight, flushes every replica, and then
// tells those that keep a dirty-region log (Checkpointer) that everything
// written before is durable on every in-sync replica, so that their logs
// can drop the regions not written since the previous checkpoint
// (architecture invariant 6). It does nothing when nothing changed since
// the last one. A replica that fails leaves the in-sync set like one that
// fails a write.
func (v *Volume) Checkpoint() error {
	if !v.changed.Load() {
		return nil
	}
	// Flush once with writes flowing, so that the flush that writes wait
	// for finds little left to write.
	if err := v.Flush(); err != nil {
		return err
	}
	v.io.Lock()
	defer v.io.Unlock()
	if v.closed {
		return ErrClosed
	}
	v.changed.Store(false)
	err := v.each(0, 0, Replica.Flush)
	if err == nil {
		err = v.each(0, 0, func(r Replica) error {
			if c, ok := r.(Checkpointer); ok {
				return c.Checkpoint()
			}
			return nil
		})
	}
	if err != nil {
		v.changed.Store(true)
	}
	return err
}

// Grow raises the size of every replica.
func (v *Volume) Grow(size int64) error {
	v.io.Lock()
	defer v.io.Unlock()
	if v.closed {
		return ErrClosed
	}
	if len(v.set.Load().catching) > 0 {
		return fmt.Errorf("engine: a replica is catching up; resize again when it is in sync: %w", errdefs.ErrUnavailable)
	}
	return v.each(0, 0, func(r Replica) error { return r.Grow(size) })
}

// Close flushes and detaches the engine; later calls fail with ErrClosed,
// and so do requests waiting for their QoS limit. Closing twice is a no-op.
// Replicas being caught up are abandoned (the next engine starts over).
func (v *Volume) Close() error {
	v.qos.close()
	v.io.Lock()
	defer v.io.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	err := v.each(0, 0, Replica.Flush)
	if errors.Is(err, errdefs.ErrFailedPrecondition) {
		// Fenced: another engine took the volume over (a higher epoch)
		// and flushes the replicas itself.
		return nil
	}
	return err
}

// Quiet runs fn at a quiet point of the write stream: no I/O is in flight
// and every in-sync replica has flushed; I/O waits until fn returns.
func (v *Volume) Quiet(fn func() error) error {
	v.io.Lock()
	defer v.io.Unlock()
	if v.closed {
		return ErrClosed
	}
	if err := v.each(0, 0, Replica.Flush); err != nil {
		return err
	}
	return fn()
}

// InSync returns the nodes of the in-sync replicas.
func (v *Volume) InSync() []string {
	s := v.set.Load()
	out := make([]string, len(s.members))
	for i, m := range s.members {
		out[i] = m.Node
	}
	return out
}

// droppable says whether a replica that failed with err should leave the
// in-sync set rather than fail the I/O: with Drop, any error but a bad
// request (the same request would fail on every replica) or fencing (this
// engine is stale: nothing it does may change the set).
func (v *Volume) droppable(err error) bool {
	if v.cfg.Drop == nil {
		return false
	}
	return !errors.Is(err, errdefs.ErrInvalidArgument) && !errors.Is(err, errdefs.ErrFailedPrecondition)
}

// drop takes node's replica out of the in-sync set after cause: Drop
// commits the change, then the set is replaced and the replica's missed
// blocks are tracked from then on. A replica already out is not dropped
// again. The returned error, when not nil, fails the I/O.
func (v *Volume) drop(node string, cause error) error {
	v.setMu.Lock()
	defer v.setMu.Unlock()
	s := v.set.Load()
	if !s.member(node) {
		return nil
	}
	if len(s.members) == 1 {
		return fmt.Errorf("engine: volume %q: the last in-sync replica, on %s, failed: %w", v.name, node, cause)
	}
	if err := v.cfg.Drop(node, cause); err != nil {
		return fmt.Errorf("engine: volume %q: replica on %s failed (%v) and could not leave the in-sync set: %w", v.name, node, cause, err)
	}
	n := &set{catching: s.catching, missed: maps.Clone(s.missed)}
	for _, m := range s.members {
		if m.Node == node {
			closeReplica(m.Replica)
			continue
		}
		n.members = append(n.members, m)
	}
	if n.missed[node] == nil {
		n.missed[node] = newDirtySet()
	}
	v.set.Store(n)
	return nil
}

// closeReplica closes a replica the engine lets go of, when it can be closed.
func closeReplica(r Replica) {
	if c, ok := r.(interface{ Close() error }); ok {
		c.Close()
	}
}

// each runs fn on every in-sync replica, and on those catching up, in
// parallel. [off, off+length) is the range fn changes (0, 0 for none):
// replicas that miss it, because they are out or because they fail it and
// leave the in-sync set, have it recorded for their catch-up. An in-sync
// replica's failure fails the call unless Drop takes it out of the set.
func (v *Volume) each(off, length int64, fn func(Replica) error) error {
	if length > 0 && !v.changed.Load() {
		v.changed.Store(true)
	}
	s := v.set.Load()
	for _, d := range s.missed {
		if !v.isCatching(s, d) {
			d.add(off, length)
		}
	}
	if len(s.members) == 1 && len(s.catching) == 0 {
		err := fn(s.members[0].Replica)
		if err != nil && v.droppable(err) {
			return v.drop(s.members[0].Node, err) // the last one: Drop refuses
		}
		return err
	}
	all := append(slices.Clone(s.members), s.catching...)
	errs := make([]error, len(all))
	var wg sync.WaitGroup
	for i, m := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(m.Replica)
		}()
	}
	wg.Wait()
	var failed []error
	for i, err := range errs {
		if err == nil {
			continue
		}
		node := all[i].Node
		if i >= len(s.members) {
			v.abandonCatchUp(node, off, length)
			continue
		}
		if !v.droppable(err) {
			failed = append(failed, err)
			continue
		}
		if derr := v.drop(node, err); derr != nil {
			failed = append(failed, derr)
			continue
		}
		if d := v.set.Load().missed[node]; d != nil {
			d.add(off, length)
		}
	}
	return errors.Join(failed...)
}

// isCatching says whether d is the missed set of a replica being caught
// up: writes reach such a replica, so they are not recorded as missed.
func (v *Volume) isCatching(s *set, d *dirtySet) bool {
	for _, m := range s.catching {
		if s.missed[m.Node] == d {
			return true
		}
	}
	return false
}

// catchUpBatch is how much a catch-up copies per hold of the write lock:
// writes wait for at most one batch. A variable for tests.
var catchUpBatch int64 = 4 << 20

// betweenCatchUpBatches, when set (by tests), runs between two batches of
// a catch-up, with writes flowing.
var betweenCatchUpBatches func()

// ErrCatchUpAbandoned ends a catch-up whose replica failed a write or was
// removed, or whose engine closed.
var ErrCatchUpAbandoned = fmt.Errorf("engine: catch-up abandoned: %w", errdefs.ErrUnavailable)

// CatchUp brings node's replica r into the in-sync set while writes
// continue (invariant 5). From the start every write also goes to r; the
// blocks r lacks are copied from the first in-sync replica: those this
// engine recorded as missed since it dropped the replica, plus extra (for
// a replica this engine never had: the extents written on either side).
// Each batch is copied with writes held, so no write races a copy. When
// nothing is left, Join commits the replica's return and it becomes a
// member. It returns the bytes copied.
func (v *Volume) CatchUp(ctx context.Context, node string, r Replica, extra []Extent) (int64, error) {
	v.setMu.Lock()
	s := v.set.Load()
	if s.member(node) {
		v.setMu.Unlock()
		return 0, nil
	}
	for _, m := range s.catching {
		if m.Node == node {
			v.setMu.Unlock()
			return 0, fmt.Errorf("engine: volume %q: replica on %s is already catching up: %w", v.name, node, errdefs.ErrAlreadyExists)
		}
	}
	n := &set{members: s.members, catching: append(slices.Clone(s.catching), Member{Node: node, Replica: r}), missed: maps.Clone(s.missed)}
	d := n.missed[node]
	if d == nil {
		d = newDirtySet()
		n.missed[node] = d
	}
	d.addExtents(extra)
	v.set.Store(n)
	v.setMu.Unlock()

	var copied int64
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			v.abandonCatchUp(node, 0, 0)
			return copied, err
		}
		done, c, err := v.catchUpBatch(node, r, d, buf)
		copied += c
		if err != nil || done {
			return copied, err
		}
		if betweenCatchUpBatches != nil {
			betweenCatchUpBatches()
		}
	}
}

// catchUpBatch copies one batch of d to r with writes held; when d is
// empty it promotes r instead and reports done.
func (v *Volume) catchUpBatch(node string, r Replica, d *dirtySet, buf []byte) (done bool, copied int64, err error) {
	v.io.Lock()
	defer v.io.Unlock()
	if v.closed {
		v.abandonCatchUp(node, 0, 0)
		return false, 0, ErrClosed
	}
	if !v.isCatching(v.set.Load(), d) {
		return false, 0, ErrCatchUpAbandoned
	}
	batch := d.take(catchUpBatch)
	if len(batch) == 0 {
		if err := r.Flush(); err != nil {
			v.abandonCatchUp(node, 0, 0)
			return false, 0, fmt.Errorf("engine: volume %q: flush of the replica on %s: %v: %w", v.name, node, err, ErrCatchUpAbandoned)
		}
		return true, 0, v.promote(node, r)
	}
	src := v.set.Load().members[0].Replica
	for i, e := range batch {
		n, readFailed, err := CopyExtent(r, src, e, buf)
		copied += n
		if err != nil {
			d.addExtents(batch[i:])
			if readFailed {
				return false, copied, fmt.Errorf("engine: volume %q: catch-up of %s: read the source: %w", v.name, node, err)
			}
			v.abandonCatchUp(node, 0, 0)
			return false, copied, fmt.Errorf("engine: volume %q: catch-up of %s: %v: %w", v.name, node, err, ErrCatchUpAbandoned)
		}
	}
	return false, copied, nil
}

// promote makes caught-up r a member once Join has committed it. Callers
// hold io exclusively.
func (v *Volume) promote(node string, r Replica) error {
	v.setMu.Lock()
	defer v.setMu.Unlock()
	if v.cfg.Join != nil {
		if err := v.cfg.Join(node); err != nil {
			return fmt.Errorf("engine: volume %q: replica on %s caught up but could not rejoin the in-sync set: %w", v.name, node, err)
		}
	}
	s := v.set.Load()
	n := &set{members: slices.Clone(s.members), missed: maps.Clone(s.missed)}
	for _, m := range s.catching {
		if m.Node != node {
			n.catching = append(n.catching, m)
		}
	}
	delete(n.missed, node)
	if node == v.cfg.Local {
		n.members = append([]Member{{Node: node, Replica: r}}, n.members...)
	} else {
		n.members = append(n.members, Member{Node: node, Replica: r})
	}
	v.set.Store(n)
	return nil
}

// abandonCatchUp stops catching node up, keeping what it misses (plus
// [off, off+length), a write it failed) for the next attempt.
func (v *Volume) abandonCatchUp(node string, off, length int64) {
	v.setMu.Lock()
	defer v.setMu.Unlock()
	s := v.set.Load()
	n := &set{members: s.members, missed: s.missed}
	for _, m := range s.catching {
		if m.Node == node {
			closeReplica(m.Replica)
			continue
		}
		n.catching = append(n.catching, m)
	}
	if d := s.missed[node]; d != nil {
		d.add(off, length)
	}
	v.set.Store(n)
}

// Remove takes node's replica out of the set for good (ha-update to fewer
// replicas, or a replica replaced): commit records it, then the engine
// stops writing to it. The last in-sync replica cannot be removed.
func (v *Volume) Remove(node string, commit func() error) error {
	v.io.Lock()
	defer v.io.Unlock()
	v.setMu.Lock()
	defer v.setMu.Unlock()
	s := v.set.Load()
	if s.member(node) && len(s.members) == 1 {
		return fmt.Errorf("engine: volume %q: the replica on %s is the last in-sync one: %w", v.name, node, errdefs.ErrFailedPrecondition)
	}
	if err := commit(); err != nil {
		return err
	}
	n := &set{missed: maps.Clone(s.missed)}
	for _, m := range s.members {
		if m.Node == node {
			closeReplica(m.Replica)
		} else {
			n.members = append(n.members, m)
		}
	}
	for _, m := range s.catching {
		if m.Node == node {
			closeReplica(m.Replica)
		} else {
			n.catching = append(n.catching, m)
		}
	}
	delete(n.missed, node)
	v.set.Store(n)
	return nil
}

// Track starts recording the blocks node's replica misses, if it is not
// in the set and not tracked already; it returns false when it was
// tracked already. Call it before listing what an untracked replica may
// lack, so that writes made meanwhile are not lost between the listing
// and CatchUp. It waits for the I/O in flight.
func (v *Volume) Track(node string) bool {
	v.io.Lock()
	defer v.io.Unlock()
	v.setMu.Lock()
	defer v.setMu.Unlock()
	s := v.set.Load()
	if s.member(node) || s.missed[node] != nil {
		return false
	}
	n := &set{members: s.members, catching: s.catching, missed: maps.Clone(s.missed)}
	n.missed[node] = newDirtySet()
	v.set.Store(n)
	return true
}

// Untrack forgets what node's replica misses (a failed Track and listing:
// the next attempt starts over). A replica catching up is left alone.
func (v *Volume) Untrack(node string) {
	v.setMu.Lock()
	defer v.setMu.Unlock()
	s := v.set.Load()
	for _, m := range s.catching {
		if m.Node == node {
			return
		}
	}
	if s.missed[node] == nil {
		return
	}
	n := &set{members: s.members, catching: s.catching, missed: maps.Clone(s.missed)}
	delete(n.missed, node)
	v.set.Store(n)
}

// Tracks says whether this engine knows what node's replica missed: it
// dropped the replica itself, or is catching it up.
func (v *Volume) Tracks(node string) bool { return v.set.Load().missed[node] != nil }

// Missed returns how many bytes node's replica lacks, as far as this
// engine knows (0 for an in-sync replica).
func (v *Volume) Missed(node string) int64 {
	if d := v.set.Load().missed[node]; d != nil {
		return d.bytes()
	}
	return 0
}

// CopyExtent copies extent e from src to dst through buf, len(buf) bytes
// at a time; a piece that reads as zeros is sent as write-zeroes (no data
// moves, nothing is allocated). It returns the bytes copied and, on an
// error, whether reading src failed (rather than writing dst).
func CopyExtent(dst Replica, src io.ReaderAt, e Extent, buf []byte) (copied int64, readFailed bool, err error) {
	for off := e.Offset; off < e.Offset+e.Length; {
		p := buf[:min(int64(len(buf)), e.Offset+e.Length-off)]
		if _, err := src.ReadAt(p, off); err != nil {
			return copied, true, err
		}
		if allZero(p) {
			err = dst.WriteZeroes(off, int64(len(p)))
		} else {
			_, err = dst.WriteAt(p, off)
		}
		if err != nil {
			return copied, false, err
		}
		copied += int64(len(p))
		off += int64(len(p))
	}
	return copied, false, nil
}

func allZero(p []byte) bool {
	for len(p) >= 8 {
		if p[0]|p[1]|p[2]|p[3]|p[4]|p[5]|p[6]|p[7] != 0 {
			return false
		}
		p = p[8:]
	}
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}
