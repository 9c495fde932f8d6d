package engine

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
)

// setLog records the in-sync set changes an engine commits.
type setLog struct {
	mu      sync.Mutex
	dropped []string
	joined  []string
	refuse  error
}

func (l *setLog) config(local string) Config {
	return Config{
		Local: local,
		Drop: func(node string, cause error) error {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.refuse != nil {
				return l.refuse
			}
			l.dropped = append(l.dropped, node)
			return nil
		},
		Join: func(node string) error {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.joined = append(l.joined, node)
			return nil
		},
	}
}

func (m *memReplica) fail(err error) {
	m.mu.Lock()
	m.failWith = err
	m.mu.Unlock()
}

func (m *memReplica) snapshot() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.data)
}

func TestAFailingReplicaLeavesTheInSyncSet(t *testing.T) {
	a, b, c := newMem(1<<20), newMem(1<<20), newMem(1<<20)
	var log setLog
	v, err := NewReplicated("vol", []Member{{"n1", a}, {"n2", b}, {"n3", c}}, log.config("n1"))
	if err != nil {
		t.Fatal(err)
	}
	b.fail(syscall.EIO)
	if _, err := v.WriteAt(bytes.Repeat([]byte{7}, 8192), 4096); err != nil {
		t.Fatalf("write with one failing replica of three: %v", err)
	}
	if got := v.InSync(); len(got) != 2 || got[0] != "n1" || got[1] != "n3" {
		t.Fatalf("in sync %v, want [n1 n3]", got)
	}
	if len(log.dropped) != 1 || log.dropped[0] != "n2" {
		t.Fatalf("drops committed: %v", log.dropped)
	}
	if got := v.Missed("n2"); got != 8192 {
		t.Fatalf("n2 missed %d bytes, want 8192", got)
	}
	// Later writes are recorded for n2 too, and not sent to it.
	b.fail(nil)
	v.WriteAt([]byte{1}, 1<<19)
	if got := v.Missed("n2"); got != 8192+4096 {
		t.Fatalf("n2 missed %d bytes, want %d", got, 8192+4096)
	}
	if b.data[1<<19] != 0 {
		t.Fatal("a dropped replica still gets writes")
	}
	// A snapshot now would leave n2 without the layer.
	if err := v.Snapshot("s"); !errors.Is(err, ErrDegraded) {
		t.Fatalf("snapshot while degraded: %v", err)
	}
}

func TestTheLastInSyncReplicaIsNeverDropped(t *testing.T) {
	a, b := newMem(1<<16), newMem(1<<16)
	var log setLog
	v, _ := NewReplicated("vol", []Member{{"n1", a}, {"n2", b}}, log.config("n1"))
	b.fail(syscall.EIO)
	if _, err := v.WriteAt([]byte{1}, 0); err != nil {
		t.Fatal(err)
	}
	a.fail(syscall.EIO)
	if _, err := v.WriteAt([]byte{2}, 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("write failing on the last in-sync replica: %v, want EIO", err)
	}
	if got := v.InSync(); len(got) != 1 || got[0] != "n1" {
		t.Fatalf("in sync %v, want [n1]", got)
	}
}

func TestAnUncommittedDropFailsTheWrite(t *testing.T) {
	a, b := newMem(1<<16), newMem(1<<16)
	log := setLog{refuse: errdefs.ErrUnavailable}
	v, _ := NewReplicated("vol", []Member{{"n1", a}, {"n2", b}}, log.config("n1"))
	b.fail(syscall.EIO)
	if _, err := v.WriteAt([]byte{1}, 0); err == nil {
		t.Fatal("a write that skipped a replica was acknowledged without the set change committed")
	}
	if got := v.InSync(); len(got) != 2 {
		t.Fatalf("in sync %v: the replica left without a committed change", got)
	}
}

// TestCatchUpCopiesOnlyWhatWasMissed drops a replica, writes, brings it
// back while writes continue, and checks that it ends identical having
// copied no more than the blocks it missed.
func TestCatchUpCopiesOnlyWhatWasMissed(t *testing.T) {
	const size = 8 << 20
	a, b := newMem(size), newMem(size)
	var log setLog
	v, _ := NewReplicated("vol", []Member{{"n1", a}, {"n2", b}}, log.config("n1"))
	rng := rand.New(rand.NewPCG(1, 2))
	write := func() {
		p := bytes.Repeat([]byte{byte(rng.IntN(255) + 1)}, 4096)
		if _, err := v.WriteAt(p, rng.Int64N(size/4096)*4096); err != nil {
			t.Fatal(err)
		}
	}
	for range 100 {
		write()
	}
	b.fail(syscall.ETIMEDOUT)
	write()
	b.fail(nil)
	for range 300 {
		write()
	}
	missed := v.Missed("n2")
	if missed == 0 || missed > 301*4096 {
		t.Fatalf("missed %d bytes", missed)
	}
	// Writes continue during the catch-up, which copies in small batches
	// so that they interleave.
	defer func(old int64) { catchUpBatch = old }(catchUpBatch)
	catchUpBatch = 16 << 10
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	var during atomic.Int64
	go func() {
		defer wg.Done()
		for len(v.set.Load().catching) == 0 && len(v.InSync()) == 1 {
			runtime.Gosched()
		}
		wrng := rand.New(rand.NewPCG(3, 4))
		for ctx.Err() == nil && len(v.InSync()) == 1 {
			during.Add(1)
			p := bytes.Repeat([]byte{byte(wrng.IntN(255) + 1)}, 4096)
			if _, err := v.WriteAt(p, wrng.Int64N(size/4096)*4096); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	// The first batch waits for some writes, so that writes surely run
	// while the replica catches up.
	defer func() { betweenCatchUpBatches = nil }()
	betweenCatchUpBatches = func() {
		for deadline := time.Now().Add(5 * time.Second); during.Load() < 20 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	copied, err := v.CatchUp(context.Background(), "n2", b, nil)
	cancel()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if copied > missed {
		t.Fatalf("copied %d bytes to catch up on %d missed", copied, missed)
	}
	if during.Load() == 0 {
		t.Fatal("no write ran during the catch-up")
	}
	t.Logf("copied %d bytes for %d missed, %d writes during the catch-up", copied, missed, during.Load())
	if got := v.InSync(); len(got) != 2 {
		t.Fatalf("in sync after catch-up: %v", got)
	}
	if len(log.joined) != 1 || log.joined[0] != "n2" {
		t.Fatalf("joins committed: %v", log.joined)
	}
	if !bytes.Equal(a.snapshot(), b.snapshot()) {
		t.Fatal("replicas differ after the catch-up")
	}
	if err := v.Snapshot("s"); err != nil {
		t.Fatalf("snapshot once in sync: %v", err)
	}
}

func TestCatchUpOfANewReplicaCopiesTheGivenExtents(t *testing.T) {
	a, b := newMem(1<<20), newMem(1<<20)
	v, _ := New("vol", a)
	v.WriteAt(bytes.Repeat([]byte{9}, 4096), 65536)
	v.cfg.Local = "n1"
	copied, err := v.CatchUp(context.Background(), "n2", b, []Extent{{Offset: 0, Length: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	if copied != 1<<20 || !bytes.Equal(a.data, b.data) {
		t.Fatalf("copied %d, equal %v", copied, bytes.Equal(a.data, b.data))
	}
}

func TestAFailingCatchUpIsAbandonedAndResumed(t *testing.T) {
	a, b, c := newMem(1<<20), newMem(1<<20), newMem(1<<20)
	var log setLog
	v, _ := NewReplicated("vol", []Member{{"n1", a}, {"n2", b}, {"n3", c}}, log.config("n1"))
	c.fail(syscall.EIO)
	v.WriteAt(bytes.Repeat([]byte{3}, 4096), 0)
	// c is still broken: the catch-up fails and nothing is lost.
	if _, err := v.CatchUp(context.Background(), "n3", c, nil); !errors.Is(err, ErrCatchUpAbandoned) {
		t.Fatalf("catch-up to a failing replica: %v", err)
	}
	if got := v.Missed("n3"); got != 4096 {
		t.Fatalf("after an abandoned catch-up n3 misses %d, want 4096", got)
	}
	c.fail(nil)
	if _, err := v.CatchUp(context.Background(), "n3", c, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.data, c.data) || len(v.InSync()) != 3 {
		t.Fatal("the resumed catch-up did not bring n3 in sync")
	}
}

func TestRemoveKeepsTheLastReplica(t *testing.T) {
	a, b := newMem(4096), newMem(4096)
	var log setLog
	v, _ := NewReplicated("vol", []Member{{"n1", a}, {"n2", b}}, log.config("n1"))
	if err := v.Remove("n2", func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := v.Remove("n1", func() error { return nil }); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("removing the last replica: %v", err)
	}
}

func TestDirtySetTakesRunsInOrder(t *testing.T) {
	d := newDirtySet()
	d.add(5<<20, 1)
	d.add(0, 8192)
	d.add(8192, 4096)
	d.add(1<<20+100, 10)
	if d.bytes() != 5*4096 {
		t.Fatalf("bytes %d", d.bytes())
	}
	got := d.take(8192)
	if len(got) != 1 || got[0] != (Extent{0, 8192}) {
		t.Fatalf("first take %v", got)
	}
	got = d.take(1 << 30)
	want := []Extent{{8192, 4096}, {1 << 20, 4096}, {5 << 20, 4096}}
	if len(got) != len(want) {
		t.Fatalf("take %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("take %v, want %v", got, want)
		}
	}
	if d.bytes() != 0 || len(d.take(1<<30)) != 0 {
		t.Fatal("set not empty after taking everything")
	}
}

// TestTrackRecordsWritesBeforeTheCatchUp: writes between Track and
// CatchUp reach the replica through the catch-up, with the listed extents.
func TestTrackRecordsWritesBeforeTheCatchUp(t *testing.T) {
	a, b := newMem(1<<20), newMem(1<<20)
	var log setLog
	v, _ := NewReplicated("vol", []Member{{"n1", a}}, log.config("n1"))
	v.WriteAt(fill4k(1), 0) // before: the listing's business
	if !v.Track("n2") || v.Track("n2") {
		t.Fatal("Track must start tracking once")
	}
	v.WriteAt(fill4k(2), 8192) // between the listing and the catch-up
	if got := v.Missed("n2"); got != 4096 {
		t.Fatalf("missed %d, want 4096", got)
	}
	if _, err := v.CatchUp(context.Background(), "n2", b, []Extent{{0, 4096}}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.data, b.data) {
		t.Fatal("replicas differ: the write made between Track and CatchUp was lost")
	}
	v.Untrack("n2") // a member now: nothing to forget
	if v.Tracks("n2") {
		t.Fatal("a member is tracked")
	}
}

func fill4k(b byte) []byte { return bytes.Repeat([]byte{b}, 4096) }

// TestRevertForgetsWhatReplicasMissed reverts a volume with one replica
// out and one failing the revert: the others revert, the failing one
// leaves the in-sync set, and the engine tracks neither (what they lack
// is what changed since the snapshot, which the caller lists).
func TestRevertForgetsWhatReplicasMissed(t *testing.T) {
	a, b, c, d := newMem(1<<20), newMem(1<<20), newMem(1<<20), newMem(1<<20)
	var log setLog
	v, err := NewReplicated("vol", []Member{{"n1", a}, {"n2", b}, {"n3", c}, {"n4", d}}, log.config("n1"))
	if err != nil {
		t.Fatal(err)
	}
	d.fail(syscall.EIO)
	if _, err := v.WriteAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	d.fail(nil)
	if !v.Tracks("n4") {
		t.Fatal("the dropped n4 is not tracked")
	}
	c.fail(syscall.EIO)
	if err := v.Revert("s1"); err != nil {
		t.Fatalf("revert with one replica failing: %v", err)
	}
	if got := v.InSync(); len(got) != 2 || got[0] != "n1" || got[1] != "n2" {
		t.Fatalf("in sync %v, want [n1 n2]", got)
	}
	for _, r := range []*memReplica{a, b} {
		if len(r.reverts) != 1 || r.reverts[0] != "s1" {
			t.Errorf("in-sync replica reverts %v, want [s1]", r.reverts)
		}
	}
	if len(d.reverts) != 0 {
		t.Errorf("the replica that was out was reverted: %v", d.reverts)
	}
	for _, n := range []string{"n3", "n4"} {
		if v.Tracks(n) {
			t.Errorf("%s is still tracked after the revert", n)
		}
	}
	// The last in-sync replica failing fails the revert.
	a.fail(syscall.EIO)
	b.fail(syscall.EIO)
	if err := v.Revert("s1"); err == nil {
		t.Fatal("revert with every replica failing succeeded")
	}
	if got := v.InSync(); len(got) != 1 {
		t.Fatalf("in sync %v, want one replica left", got)
	}
}

// ckptReplica counts checkpoints and the flushes before them.
type ckptReplica struct {
	*memReplica
	ckpts         int
	flushedBefore bool
}

func (c *ckptReplica) Checkpoint() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ckpts++
	c.flushedBefore = c.flushes > 0
	return nil
}

func TestCheckpointFollowsChanges(t *testing.T) {
	a, b := &ckptReplica{memReplica: newMem(1 << 20)}, &ckptReplica{memReplica: newMem(1 << 20)}
	var log setLog
	v, err := NewReplicated("vol", []Member{{"n1", a}, {"n2", b}}, log.config("n1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Checkpoint(); err != nil || a.ckpts != 0 {
		t.Fatalf("checkpoint with nothing written: %v, %d checkpoints", err, a.ckpts)
	}
	if _, err := v.WriteAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*ckptReplica{a, b} {
		if r.ckpts != 1 || !r.flushedBefore {
			t.Fatalf("after a write: %d checkpoints, flushed before: %v", r.ckpts, r.flushedBefore)
		}
	}
	// Reads and flushes change nothing; a trim does.
	v.ReadAt(make([]byte, 10), 0)
	v.Flush()
	v.Checkpoint()
	if a.ckpts != 1 {
		t.Fatalf("checkpoint after reads only: %d", a.ckpts)
	}
	if err := v.Trim(0, 4096); err != nil {
		t.Fatal(err)
	}
	v.Checkpoint()
	if a.ckpts != 2 || b.ckpts != 2 {
		t.Fatalf("checkpoints after a trim: %d, %d", a.ckpts, b.ckpts)
	}
}
