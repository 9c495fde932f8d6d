package engine

import (
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/qos"
)

// fakeClock is a clock that moves only when the test advances it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at   time.Time
	c    chan time.Time
	done bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) timer(d time.Duration) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), c: make(chan time.Time, 1)}
	c.timers = append(c.timers, t)
	return t.c, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.done
		t.done = true
		return was
	}
}

// pending is the number of timers armed and not yet fired or stopped.
func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.done {
			n++
		}
	}
	return n
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	live := c.timers[:0]
	for _, t := range c.timers {
		if !t.done && !t.at.After(c.now) {
			t.done = true
			t.c <- c.now
		}
		if !t.done {
			live = append(live, t)
		}
	}
	c.timers = live
}

// eventually polls cond until it holds, failing the test after 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestBucketArithmetic drives one lane by hand: the burst, the rate, and a
// request larger than the bucket that takes it into debt.
func TestBucketArithmetic(t *testing.T) {
	var ln lane
	ln.ops.set(100)           // burst 10 ops
	ln.bytes.set(10 << 20)    // 10 MiB/s, burst 1 MiB
	for i := 0; i < 10; i++ { // the full bucket lets a burst through
		if d := ln.delay(1, 4096); d != 0 {
			t.Fatalf("request %d of the burst waits %v", i, d)
		}
		ln.take(1, 4096)
	}
	if d := ln.delay(1, 4096); d != 10*time.Millisecond {
		t.Fatalf("after the burst: wait %v, want 10ms (one op at 100/s)", d)
	}
	ln.ops.accrue(time.Second)
	ln.bytes.accrue(time.Second)
	if ln.ops.tokens != 10 || ln.bytes.tokens != 1<<20 {
		t.Fatalf("a bucket fills only up to its burst: %v ops, %v bytes", ln.ops.tokens, ln.bytes.tokens)
	}
	// 4 MiB is more than the 1 MiB bucket: it goes when the bucket is
	// full and leaves 3 MiB of debt, 300 ms at 10 MiB/s.
	if d := ln.delay(qos.Ops(4<<20), 4<<20); d != 0 {
		t.Fatalf("a large request waits %v with a full bucket", d)
	}
	ln.take(qos.Ops(4<<20), 4<<20)
	if d := ln.delay(1, 4096); d < 300*time.Millisecond || d > 301*time.Millisecond {
		t.Fatalf("after a 4 MiB request: wait %v, want 300.4ms of debt", d)
	}
	if ln.ops.tokens != 6 {
		t.Fatalf("a 4 MiB request counts %v ops, want 4", 10-ln.ops.tokens)
	}

	// Raising the rate keeps the debt; removing the limit forgets it.
	ln.bytes.set(20 << 20)
	if d := ln.delay(1, 4096); d < 150*time.Millisecond || d > 151*time.Millisecond {
		t.Fatalf("after raising the limit: wait %v, want about 150ms", d)
	}
	ln.bytes.set(0)
	ln.ops.set(0)
	if d := ln.delay(1000, 1<<30); d != 0 || ln.limited() {
		t.Fatalf("unlimited lane waits %v", d)
	}
}

func TestOpsCounting(t *testing.T) {
	for n, want := range map[int]int64{0: 1, 1: 1, 4096: 1, 1 << 20: 1, 1<<20 + 1: 2, 4 << 20: 4, 32 << 20: 32} {
		if got := qos.Ops(n); got != want {
			t.Errorf("Ops(%d) = %d, want %d", n, got, want)
		}
	}
}

// TestLimiterRateWithFakeClock runs a saturating client for 10 simulated
// seconds at 100 write IOPS: 1000 requests plus the 10 of the first burst.
func TestLimiterRateWithFakeClock(t *testing.T) {
	clk := newFakeClock()
	l := newLimiter(clk)
	l.set(qos.Limits{WriteIOPS: 100})
	done := 0
	// One goroutine issues requests one after another; the test advances
	// the clock each time the request sleeps on its timer.
	var mu sync.Mutex
	stop := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := l.acquire(dirWrite, 1, 4096); err != nil {
				return
			}
			mu.Lock()
			done++
			mu.Unlock()
		}
	}()
	for elapsed := time.Duration(0); elapsed < 10*time.Second; elapsed += time.Millisecond {
		eventually(t, "the request to wait for its timer", func() bool { return clk.pending() == 1 })
		clk.advance(time.Millisecond)
	}
	eventually(t, "the request to wait for its timer", func() bool { return clk.pending() == 1 })
	close(stop)
	l.close()
	<-finished
	if done < 1009 || done > 1011 {
		t.Fatalf("%d requests in 10 s at 100 IOPS (burst 10), want 1010", done)
	}
}

// TestSetLimitsWakesWaiters: requests waiting under a low limit go at
// once when the limit is removed, and re-evaluate when it is raised or
// lowered.
func TestSetLimitsWakesWaiters(t *testing.T) {
	clk := newFakeClock()
	l := newLimiter(clk)
	l.set(qos.Limits{WriteIOPS: 1}) // burst 1
	if err := l.acquire(dirWrite, 1, 0); err != nil {
		t.Fatal(err)
	}
	results := make(chan error, 3)
	for i := 0; i < 3; i++ {
		go func() { results <- l.acquire(dirWrite, 1, 0) }()
	}
	eventually(t, "three queued writes", func() bool { return l.queued(dirWrite) == 3 && clk.pending() == 1 })

	// Reads have their own lane: unlimited, they do not queue behind writes.
	if err := l.acquire(dirRead, 1, 4096); err != nil {
		t.Fatal(err)
	}

	// 1000 IOPS: the head now needs 1 ms, not 1 s.
	l.set(qos.Limits{WriteIOPS: 1000})
	clk.advance(time.Millisecond)
	if err := <-results; err != nil {
		t.Fatal(err)
	}
	eventually(t, "two queued writes", func() bool { return l.queued(dirWrite) == 2 && clk.pending() == 1 })

	// Lower again: the next needs a full second.
	l.set(qos.Limits{WriteIOPS: 1})
	eventually(t, "the head to re-arm its timer", func() bool { return clk.pending() == 1 })
	clk.advance(500 * time.Millisecond)
	select {
	case err := <-results:
		t.Fatalf("a request went after 0.5 s at 1 IOPS (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}

	// Removing the limit lets both through without time passing.
	l.set(qos.Limits{})
	for i := 0; i < 2; i++ {
		select {
		case err := <-results:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("waiting requests did not go when the limit was removed")
		}
	}
	if l.active.Load() {
		t.Fatal("a limiter without limits is still active")
	}
}

// TestCloseWakesWaiters: Close fails every waiting request with ErrClosed
// and leaves no goroutine behind.
func TestCloseWakesWaiters(t *testing.T) {
	before := runtime.NumGoroutine()
	v, err := New("vol", newMem(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	v.qos = newLimiter(clk)
	if err := v.SetLimits(qos.Limits{ReadIOPS: 1, WriteIOPS: 1}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := v.WriteAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := v.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 10; i++ {
		wg.Add(2)
		go func() { defer wg.Done(); _, err := v.WriteAt(make([]byte, 4096), 0); errs <- err }()
		go func() { defer wg.Done(); _, err := v.ReadAt(make([]byte, 4096), 0); errs <- err }()
	}
	eventually(t, "20 queued requests", func() bool {
		return v.qos.queued(dirWrite) == 10 && v.qos.queued(dirRead) == 10
	})
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("a request waiting at Close returned %v, want ErrClosed", err)
		}
	}
	if err := v.Trim(0, 4096); !errors.Is(err, ErrClosed) {
		t.Fatalf("trim after close: %v", err)
	}
	eventually(t, "the goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
}

// TestEngineLimitsRealTime measures the engine under a real clock: 200
// write IOPS over one second, reads unlimited, and trim counted as a write.
func TestEngineLimitsRealTime(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a second")
	}
	v, err := New("vol", newMem(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.SetLimits(qos.Limits{WriteIOPS: 200}); err != nil {
		t.Fatal(err)
	}
	if got := v.Limits(); got != (qos.Limits{WriteIOPS: 200}) {
		t.Fatalf("Limits() = %+v", got)
	}
	// Use up the burst (20 ops) so that the measure is of the rate.
	for i := 0; i < 20; i++ {
		if err := v.Trim(0, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu     sync.Mutex
		writes int
		wg     sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(time.Second)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for time.Now().Before(deadline) {
				if _, err := v.WriteAt(buf, 0); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				writes++
				mu.Unlock()
			}
		}()
	}
	// Reads are not limited while writes queue.
	reads := 0
	for time.Now().Before(deadline) && reads < 10000 {
		if _, err := v.ReadAt(make([]byte, 4096), 0); err != nil {
			t.Fatal(err)
		}
		reads++
	}
	wg.Wait()
	rate := float64(writes) / time.Since(start).Seconds()
	if rate < 180 || rate > 220 {
		t.Fatalf("%d writes in %v: %.0f IOPS, want 200 ± 10%%", writes, time.Since(start), rate)
	}
	if reads < 10000 {
		t.Fatalf("only %d unlimited reads in a second", reads)
	}
	if err := v.SetLimits(qos.Limits{WriteIOPS: -1}); err == nil {
		t.Fatal("a negative limit was accepted")
	}
}
