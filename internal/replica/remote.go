package replica

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
)

// DefaultTimeout is how long a Remote waits for the reply to a request
// unless WithTimeout says otherwise.
const DefaultTimeout = 10 * time.Second

// Option configures Dial and DialControl.
type Option func(*options)

type options struct {
	timeout time.Duration
	dialer  *net.Dialer
}

// WithTimeout sets how long a request may wait for its reply (default
// DefaultTimeout). A request that times out fails with an error wrapping
// errdefs.ErrUnavailable and breaks the connection: see Remote.
func WithTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// WithDialer sets the dialer of the connection (local address, keep-alive).
func WithDialer(d *net.Dialer) Option {
	return func(o *options) {
		if d != nil {
			o.dialer = d
		}
	}
}

// Remote is a replica on another node, reached over one connection of the
// data protocol bound to one volume and epoch. It implements the engine's
// Replica interface. It is safe for concurrent use: concurrent calls are
// pipelined over the connection, their requests coalesced into as few
// writes as the queue allows.
//
// Every request waits at most the timeout of WithTimeout for its reply. A
// timeout or a broken connection fails that call and every call in flight
// with an error wrapping errdefs.ErrUnavailable, and breaks the Remote for
// good: later calls fail at once with the same error (see Err). The engine
// then drops the replica, and a new Dial makes a new one. Errors the
// server replies with (ErrStaleEpoch, errdefs.ErrInvalidArgument, ...)
// fail only their call.
type Remote struct {
	addr    string
	volume  string
	epoch   uint64
	timeout time.Duration
	nc      net.Conn

	size atomic.Int64 // last size heard from the server

	mu      sync.Mutex
	err     error // why the Remote is broken; nil while it works
	next    uint64
	pending map[uint64]*call // sent or queued, awaiting their reply
	queue   []*call          // awaiting the writer
	spare   []*call          // the writer's previous batch, for reuse

	wake   chan struct{} // cap 1: the queue has calls
	broken chan struct{} // closed when err is set
	done   sync.WaitGroup
}

// call is one request in flight. Two parties hold it until it is done:
// the writer (until its payload is written or dropped) and the completer
// (the reader when the reply comes, or fail). Whichever lets go last
// sends on done, after which the caller owns the call again.
type call struct {
	h       reqHeader
	payload []byte // request payload (write data, encoded arguments)
	rbuf    []byte // read: destination of the reply payload

	resp []byte // reply payload of ops other than read
	err  error

	refs  atomic.Int32
	done  chan struct{} // cap 1
	timer *time.Timer   // the caller's, reused with the call
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

func getCall(o op, off, length uint64) *call {
	c := callPool.Get().(*call)
	c.h = reqHeader{op: o, off: off, length: length}
	return c
}

// putCall recycles a completed call.
func putCall(c *call) {
	c.payload, c.rbuf, c.resp, c.err = nil, nil, nil, nil
	callPool.Put(c)
}

func (c *call) release() {
	if c.refs.Add(-1) == 0 {
		c.done <- struct{}{}
	}
}

// Dial connects to the replica server at addr and binds the connection to
// volume at epoch. The server refuses an epoch older than the highest it
// has seen for the volume (an error wrapping ErrStaleEpoch) and a volume
// it does not hold (errdefs.ErrNotFound); an unreachable server is
// errdefs.ErrUnavailable. Once Dial returns, the epoch is the volume's on
// that node: every older handle there is fenced.
func Dial(ctx context.Context, addr, volume string, epoch uint64, opts ...Option) (*Remote, error) {
	if err := errdefs.ValidateName("volume", volume); err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	return dial(ctx, addr, volume, epoch, opts)
}

func dial(ctx context.Context, addr, volume string, epoch uint64, opts []Option) (*Remote, error) {
	o := options{timeout: DefaultTimeout, dialer: &net.Dialer{}}
	for _, fn := range opts {
		fn(&o)
	}
	nc, err := o.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("replica: dial %s: %w: %w", addr, ctx.Err(), errdefs.ErrUnavailable)
		}
		return nil, fmt.Errorf("replica: dial %s: %v: %w", addr, err, errdefs.ErrUnavailable)
	}
	r := &Remote{
		addr:    addr,
		volume:  volume,
		epoch:   epoch,
		timeout: o.timeout,
		nc:      nc,
		pending: map[uint64]*call{},
		wake:    make(chan struct{}, 1),
		broken:  make(chan struct{}),
	}
	br := bufio.NewReaderSize(nc, 256<<10)
	size, err := r.hello(ctx, br)
	if err != nil {
		nc.Close()
		return nil, err
	}
	r.size.Store(size)
	r.done.Add(2)
	go r.readLoop(br)
	go r.writeLoop(bufio.NewWriterSize(nc, 256<<10))
	return r, nil
}

// hello binds the connection, synchronously, within the timeout and ctx.
func (r *Remote) hello(ctx context.Context, br *bufio.Reader) (int64, error) {
	deadline := time.Now().Add(r.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	r.nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { r.nc.SetDeadline(time.Now()) })
	defer stop()

	payload, err := encodeStrs(nil, r.volume)
	if err != nil {
		return 0, err
	}
	h := reqHeader{op: opHello, off: r.epoch, length: protoVersion, plen: uint32(len(payload))}
	b := make([]byte, reqHeaderLen, reqHeaderLen+len(payload))
	h.put(b)
	b = append(b, payload...)
	if _, err := r.nc.Write(b); err != nil {
		return 0, r.helloErr(ctx, err)
	}
	var hb [replyHeaderLen]byte
	if _, err := io.ReadFull(br, hb[:]); err != nil {
		return 0, r.helloErr(ctx, err)
	}
	rh, err := parseReplyHeader(hb[:])
	if err != nil {
		return 0, r.helloErr(ctx, err)
	}
	if rh.plen > maxMessage {
		return 0, r.helloErr(ctx, fmt.Errorf("hello reply of %d bytes", rh.plen))
	}
	data := make([]byte, rh.plen)
	if _, err := io.ReadFull(br, data); err != nil {
		return 0, r.helloErr(ctx, err)
	}
	if rh.status != statusOK {
		return 0, fmt.Errorf("replica: hello %s: %w", r.addr, errorOf(rh.status, string(data)))
	}
	if len(data) != 8 {
		return 0, r.helloErr(ctx, fmt.Errorf("hello reply of %d bytes, want 8", len(data)))
	}
	if stop() {
		r.nc.SetDeadline(time.Time{})
	} else {
		return 0, r.helloErr(ctx, ctx.Err())
	}
	return int64(binary.BigEndian.Uint64(data)), nil
}

func (r *Remote) helloErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("replica: hello %s: %w: %w", r.addr, ctx.Err(), errdefs.ErrUnavailable)
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		// The connection's deadline, which was ctx's, fired first.
		return fmt.Errorf("replica: hello %s: %w: %w", r.addr, context.DeadlineExceeded, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("replica: hello %s: %v: %w", r.addr, err, errdefs.ErrUnavailable)
}

// Addr returns the address of the replica server.
func (r *Remote) Addr() string { return r.addr }

// Volume returns the volume the connection is bound to.
func (r *Remote) Volume() string { return r.volume }

// Epoch returns the epoch the connection is bound to.
func (r *Remote) Epoch() uint64 { return r.epoch }

// Err returns why the Remote is broken (an error wrapping
// errdefs.ErrUnavailable), or nil while it works.
func (r *Remote) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Close breaks the connection: calls in flight fail with
// errdefs.ErrUnavailable. It returns once the Remote's goroutines have
// exited. Closing twice is a no-op.
func (r *Remote) Close() error {
	r.fail(fmt.Errorf("replica: %s: connection closed: %w", r.addr, errdefs.ErrUnavailable))
	r.done.Wait()
	return nil
}

// fail breaks the Remote with err (the first error wins): it closes the
// connection and completes every call that is not with the reader.
func (r *Remote) fail(err error) {
	r.mu.Lock()
	if r.err != nil {
		r.mu.Unlock()
		return
	}
	r.err = err
	pend, queue := r.pending, r.queue
	r.pending, r.queue = nil, nil
	close(r.broken)
	r.mu.Unlock()
	r.nc.Close()
	for _, c := range pend {
		c.err = err
		c.release()
	}
	for _, c := range queue {
		c.release() // the writer's hold: it will never see these
	}
}

// send queues c and waits for it to complete, for at most timeout (none
// if 0) and until cancel is closed (nil: never). A timeout breaks the
// Remote. It returns false when cancel ended the wait: the call then still
// belongs to the connection and must not be reused.
func (r *Remote) send(cancel <-chan struct{}, c *call, timeout time.Duration) bool {
	c.h.plen = uint32(len(c.payload))
	c.refs.Store(2)
	r.mu.Lock()
	if r.err != nil {
		c.err = r.err
		r.mu.Unlock()
		return true
	}
	r.next++
	c.h.handle = r.next
	r.pending[c.h.handle] = c
	r.queue = append(r.queue, c)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}

	var tc <-chan time.Time
	if timeout > 0 {
		// Since Go 1.23 a stopped or reset timer delivers no stale tick,
		// so the call's timer is reused as is.
		if c.timer == nil {
			c.timer = time.NewTimer(timeout)
		} else {
			c.timer.Reset(timeout)
		}
		defer c.timer.Stop()
		tc = c.timer.C
	}
	select {
	case <-c.done:
		return true
	case <-tc:
		r.fail(fmt.Errorf("replica: %s: %v: no reply within %v: %w", r.addr, c.h.op, timeout, errdefs.ErrUnavailable))
		<-c.done
		return true
	case <-cancel:
		return false
	}
}

// writeLoop sends the queued requests, coalescing them in one buffer that
// it flushes whenever the queue is empty, until the Remote breaks.
func (r *Remote) writeLoop(w *bufio.Writer) {
	defer r.done.Done()
	var hb [reqHeaderLen]byte
	for {
		select {
		case <-r.wake:
		case <-r.broken:
			return
		}
		yielded := false
		for {
			r.mu.Lock()
			if r.err != nil {
				r.mu.Unlock()
				return
			}
			// The queue and spare swap arrays: neither allocates in the
			// steady state, and they never share one.
			batch := r.queue
			r.queue, r.spare = r.spare[:0], nil
			r.mu.Unlock()
			if len(batch) == 0 {
				r.spare = batch
				if !yielded {
					// Let the callers about to send join this write.
					yielded = true
					runtime.Gosched()
					continue
				}
				if err := w.Flush(); err != nil {
					r.fail(fmt.Errorf("replica: %s: send: %v: %w", r.addr, err, errdefs.ErrUnavailable))
					return
				}
				break
			}
			yielded = false
			var err error
			for i, c := range batch {
				if err == nil {
					c.h.put(hb[:])
					if _, err = w.Write(hb[:]); err == nil {
						_, err = w.Write(c.payload)
					}
				}
				c.release()
				batch[i] = nil
			}
			r.spare = batch
			if err != nil {
				r.fail(fmt.Errorf("replica: %s: send: %v: %w", r.addr, err, errdefs.ErrUnavailable))
				return
			}
		}
	}
}

// readLoop completes calls with their replies until the connection fails.
func (r *Remote) readLoop(br *bufio.Reader) {
	defer r.done.Done()
	var hb [replyHeaderLen]byte
	for {
		if _, err := io.ReadFull(br, hb[:]); err != nil {
			r.fail(fmt.Errorf("replica: %s: receive: %v: %w", r.addr, err, errdefs.ErrUnavailable))
			return
		}
		rh, err := parseReplyHeader(hb[:])
		if err == nil && rh.plen > MaxPayload {
			err = fmt.Errorf("reply payload of %d bytes", rh.plen)
		}
		var c *call
		if err == nil {
			r.mu.Lock()
			c = r.pending[rh.handle]
			delete(r.pending, rh.handle)
			r.mu.Unlock()
			if c == nil && r.Err() == nil {
				err = fmt.Errorf("reply to unknown handle %d", rh.handle)
			}
		}
		if err != nil {
			r.fail(fmt.Errorf("replica: %s: protocol error: %v: %w", r.addr, err, errdefs.ErrUnavailable))
			return
		}
		if c == nil {
			return // broken meanwhile: fail completed the calls
		}
		if err := r.complete(br, c, rh); err != nil {
			err = fmt.Errorf("replica: %s: receive: %v: %w", r.addr, err, errdefs.ErrUnavailable)
			c.err = err
			c.release()
			r.fail(err)
			return
		}
		c.release()
	}
}

// complete reads the reply's payload into c.
func (r *Remote) complete(br *bufio.Reader, c *call, rh replyHeader) error {
	if rh.status != statusOK {
		if rh.plen > maxMessage {
			return fmt.Errorf("error message of %d bytes", rh.plen)
		}
		msg := make([]byte, rh.plen)
		if _, err := io.ReadFull(br, msg); err != nil {
			return err
		}
		c.err = errorOf(rh.status, string(msg))
		return nil
	}
	if c.h.op == opRead {
		if int(rh.plen) != len(c.rbuf) {
			return fmt.Errorf("read reply of %d bytes, want %d", rh.plen, len(c.rbuf))
		}
		_, err := io.ReadFull(br, c.rbuf)
		return err
	}
	if rh.plen == 0 {
		return nil
	}
	c.resp = make([]byte, rh.plen)
	_, err := io.ReadFull(br, c.resp)
	return err
}

// roundTrip runs one data request under the Remote's timeout and returns
// its reply payload (nil for reads, which land in c.rbuf).
func (r *Remote) roundTrip(c *call) ([]byte, error) {
	r.send(nil, c, r.timeout)
	o, resp, err := c.h.op, c.resp, c.err
	putCall(c)
	if err != nil {
		var we *wireError
		if errors.As(err, &we) {
			return nil, fmt.Errorf("replica: %v on %s: %w", o, r.addr, err)
		}
		return nil, err
	}
	return resp, nil
}

// ReadAt reads len(p) bytes at off from the replica; reads longer than
// MaxPayload are split.
func (r *Remote) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("replica: read at negative offset %d: %w", off, errdefs.ErrInvalidArgument)
	}
	n := 0
	for n < len(p) {
		k := min(len(p)-n, MaxPayload)
		c := getCall(opRead, uint64(off)+uint64(n), uint64(k))
		c.rbuf = p[n : n+k]
		if _, err := r.roundTrip(c); err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}

// WriteAt writes p at off on the replica; writes longer than MaxPayload
// are split. p is not retained after WriteAt returns.
func (r *Remote) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("replica: write at negative offset %d: %w", off, errdefs.ErrInvalidArgument)
	}
	n := 0
	for n < len(p) {
		k := min(len(p)-n, MaxPayload)
		c := getCall(opWrite, uint64(off)+uint64(n), 0)
		c.payload = p[n : n+k]
		if _, err := r.roundTrip(c); err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}

// Flush makes every write the replica acknowledged durable.
func (r *Remote) Flush() error {
	_, err := r.roundTrip(getCall(opFlush, 0, 0))
	return err
}

// Trim discards the range on the replica.
func (r *Remote) Trim(off, length int64) error {
	if off < 0 || length < 0 {
		return fmt.Errorf("replica: trim [%d, +%d): %w", off, length, errdefs.ErrInvalidArgument)
	}
	_, err := r.roundTrip(getCall(opTrim, uint64(off), uint64(length)))
	return err
}

// WriteZeroes makes the range read as zeros on the replica.
func (r *Remote) WriteZeroes(off, length int64) error {
	if off < 0 || length < 0 {
		return fmt.Errorf("replica: write-zeroes [%d, +%d): %w", off, length, errdefs.ErrInvalidArgument)
	}
	_, err := r.roundTrip(getCall(opZeroes, uint64(off), uint64(length)))
	return err
}

// Size returns the replica's volume size. It asks the server; when that
// fails (Size has no error to report) it returns the last size heard.
func (r *Remote) Size() int64 {
	resp, err := r.roundTrip(getCall(opSize, 0, 0))
	if err == nil && len(resp) == 8 {
		r.size.Store(int64(binary.BigEndian.Uint64(resp)))
	}
	return r.size.Load()
}

// Grow raises the replica's volume size.
func (r *Remote) Grow(size int64) error {
	if size < 0 {
		return fmt.Errorf("replica: grow to %d: %w", size, errdefs.ErrInvalidArgument)
	}
	if _, err := r.roundTrip(getCall(opGrow, 0, uint64(size))); err != nil {
		return err
	}
	r.size.Store(size)
	return nil
}

// Snapshot seals the replica's head as snapshot name.
func (r *Remote) Snapshot(name string) error {
	payload, err := encodeStrs(nil, name)
	if err != nil {
		return err
	}
	c := getCall(opSnapshot, 0, 0)
	c.payload = payload
	_, err = r.roundTrip(c)
	return err
}

// Revert drops every write since snapshot name, the replica's latest; the
// size goes back to the snapshot's.
func (r *Remote) Revert(name string) error {
	payload, err := encodeStrs(nil, name)
	if err != nil {
		return err
	}
	c := getCall(opRevert, 0, 0)
	c.payload = payload
	if _, err = r.roundTrip(c); err != nil {
		return err
	}
	r.Size()
	return nil
}

// Checkpoint tells the replica that everything this engine wrote before
// is durable on every in-sync replica (see Local.Checkpoint).
func (r *Remote) Checkpoint() error {
	_, err := r.roundTrip(getCall(opCheckpoint, 0, 0))
	return err
}
