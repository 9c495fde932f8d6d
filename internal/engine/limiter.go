package engine

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-storage/strata/internal/qos"
)

// burstWindow is how much of a limit's rate a bucket holds when full: a
// volume that was idle may run this long at any speed before its limit
// applies. 100 ms is QEMU's default (bucket size avg/10).
const burstWindow = 100 * time.Millisecond

// direction selects a limiter lane.
type direction int

const (
	dirRead direction = iota
	dirWrite
)

// limiter enforces a volume's qos.Limits: per direction (read, write) a
// token bucket of operations and one of bytes. A request waits, in FIFO
// order within its direction, until both of its buckets hold its cost
// (or a full bucket's worth, for a request larger than the bucket: it then
// takes the bucket below zero and the requests after it wait the debt off,
// so the long-run rate is exact whatever the request sizes).
//
// Only the head of a lane's queue sleeps on a timer; the others wait to
// become the head. SetLimits and close wake the heads, which re-evaluate:
// a limit raised or removed lets waiting requests through at once.
type limiter struct {
	clock clock
	// active is false while no limit is set and the limiter is open, so
	// that unlimited volumes pay one atomic load per request.
	active atomic.Bool

	mu     sync.Mutex
	limits qos.Limits
	closed bool
	last   time.Time // when the buckets last accrued
	lanes  [2]lane   // by direction
}

// lane is one direction's buckets and its queue of waiting requests.
type lane struct {
	ops, bytes bucket
	queue      []*waiter
}

// waiter is a request queued in a lane. kick (capacity 1) is signalled
// when it becomes the head, when limits change and on close; a stale kick
// only makes it re-evaluate.
type waiter struct {
	kick chan struct{}
}

func (w *waiter) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// bucket is a token bucket: tokens accrue at rate per second up to burst.
// rate 0 is no limit.
type bucket struct {
	rate, burst, tokens float64
}

// epsilon absorbs floating-point error when comparing token counts.
const epsilon = 1e-9

// set changes the bucket's rate (per second; 0 removes the limit). A bucket
// that was unlimited starts full; otherwise it keeps its tokens, debt
// included, up to the new burst.
func (b *bucket) set(rate int64) {
	if rate == 0 {
		*b = bucket{}
		return
	}
	r := float64(rate)
	burst := math.Max(1, r*burstWindow.Seconds())
	if b.rate == 0 {
		b.tokens = burst
	}
	b.rate, b.burst = r, burst
	b.tokens = math.Min(b.tokens, burst)
}

func (b *bucket) accrue(d time.Duration) {
	if b.rate == 0 || d <= 0 {
		return
	}
	b.tokens = math.Min(b.burst, b.tokens+b.rate*d.Seconds())
}

// delay is how long until the bucket holds enough for cost: cost tokens, or
// the whole burst when cost is larger.
func (b *bucket) delay(cost float64) time.Duration {
	if b.rate == 0 {
		return 0
	}
	need := math.Min(cost, b.burst)
	if b.tokens+epsilon >= need {
		return 0
	}
	return time.Duration(math.Ceil((need - b.tokens) / b.rate * float64(time.Second)))
}

func (b *bucket) take(cost float64) {
	if b.rate != 0 {
		b.tokens -= cost
	}
}

func (ln *lane) limited() bool { return ln.ops.rate != 0 || ln.bytes.rate != 0 }

// delay is how long until a request of ops operations and n bytes may go.
func (ln *lane) delay(ops, n int64) time.Duration {
	return max(ln.ops.delay(float64(ops)), ln.bytes.delay(float64(n)))
}

func (ln *lane) take(ops, n int64) {
	ln.ops.take(float64(ops))
	ln.bytes.take(float64(n))
}

func (ln *lane) remove(w *waiter) {
	for i, q := range ln.queue {
		if q == w {
			ln.queue = append(ln.queue[:i], ln.queue[i+1:]...)
			if i == 0 && len(ln.queue) > 0 {
				ln.queue[0].wake()
			}
			return
		}
	}
}

func newLimiter(c clock) *limiter {
	if c == nil {
		c = realClock{}
	}
	return &limiter{clock: c, last: c.Now()}
}

// accrueLocked adds the tokens earned since the last call.
func (l *limiter) accrueLocked() {
	now := l.clock.Now()
	d := now.Sub(l.last)
	l.last = now
	for i := range l.lanes {
		l.lanes[i].ops.accrue(d)
		l.lanes[i].bytes.accrue(d)
	}
}

// set installs new limits; waiting requests re-evaluate against them.
func (l *limiter) set(lim qos.Limits) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.accrueLocked()
	l.limits = lim
	l.lanes[dirRead].ops.set(lim.ReadIOPS)
	l.lanes[dirRead].bytes.set(lim.ReadBytesPerSec)
	l.lanes[dirWrite].ops.set(lim.WriteIOPS)
	l.lanes[dirWrite].bytes.set(lim.WriteBytesPerSec)
	l.active.Store(l.closed || !lim.IsZero())
	for i := range l.lanes {
		if q := l.lanes[i].queue; len(q) > 0 {
			q[0].wake()
		}
	}
}

func (l *limiter) get() qos.Limits {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limits
}

// close fails every waiting and later request with ErrClosed.
func (l *limiter) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.active.Store(true)
	for i := range l.lanes {
		for _, w := range l.lanes[i].queue {
			w.wake()
		}
	}
}

// acquire waits until a request of ops operations and n bytes in direction
// d is within the limits, and charges it. It fails with ErrClosed when the
// limiter is closed before or while it waits.
func (l *limiter) acquire(d direction, ops, n int64) error {
	if !l.active.Load() {
		return nil
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	ln := &l.lanes[d]
	if !ln.limited() {
		l.mu.Unlock()
		return nil
	}
	if len(ln.queue) == 0 {
		l.accrueLocked()
		if ln.delay(ops, n) == 0 {
			ln.take(ops, n)
			l.mu.Unlock()
			return nil
		}
	}
	w := &waiter{kick: make(chan struct{}, 1)}
	ln.queue = append(ln.queue, w)
	for {
		if l.closed {
			ln.remove(w)
			l.mu.Unlock()
			return ErrClosed
		}
		if ln.queue[0] != w {
			l.mu.Unlock()
			<-w.kick
			l.mu.Lock()
			continue
		}
		l.accrueLocked()
		wait := ln.delay(ops, n)
		if wait == 0 {
			ln.take(ops, n)
			ln.remove(w) // wakes the next head
			l.mu.Unlock()
			return nil
		}
		l.mu.Unlock()
		fired, stop := l.clock.timer(wait)
		select {
		case <-fired:
		case <-w.kick:
		}
		stop()
		l.mu.Lock()
	}
}

// queued returns the number of requests waiting in direction d (tests).
func (l *limiter) queued(d direction) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lanes[d].queue)
}

// clock is time as the limiter sees it; tests drive a fake one.
type clock interface {
	Now() time.Time
	// timer returns a channel that receives once d has passed, and the
	// function that releases the timer.
	timer(d time.Duration) (<-chan time.Time, func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) timer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}
