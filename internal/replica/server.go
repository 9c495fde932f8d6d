package replica

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/strata-storage/strata/internal/chain"
	"github.com/strata-storage/strata/internal/errdefs"
)

// Server serves the chains of one pool over the data protocol (see the
// package comment) to the engines of other nodes and to control clients.
type Server struct {
	pool   *chain.Pool
	epochs *Epochs
	log    *slog.Logger

	maxInFlight      int
	maxInFlightBytes int64
	maxWorkers       int
	// payloadTimeout bounds how long a request's payload may take to come
	// once its header has; writeTimeout how long a batch of replies may
	// take to leave; shutdownGrace how long the replies of requests in
	// flight get when the server stops.
	payloadTimeout time.Duration
	writeTimeout   time.Duration
	shutdownGrace  time.Duration
}

// NewServer returns a server of pool's chains, fencing I/O with epochs,
// which must be the Epochs every Local of this pool uses too. A nil log
// discards.
func NewServer(pool *chain.Pool, epochs *Epochs, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		pool:             pool,
		epochs:           epochs,
		log:              log,
		maxInFlight:      64,
		maxInFlightBytes: 2 * MaxPayload,
		maxWorkers:       16,
		payloadTimeout:   30 * time.Second,
		writeTimeout:     30 * time.Second,
		shutdownGrace:    2 * time.Second,
	}
}

// Serve accepts connections on ln until ctx is done or Accept fails, and
// returns after every connection it started has ended and all their
// goroutines have exited. When ctx is done it closes ln, stops reading
// requests, gives the replies of requests in flight a short grace to
// leave, closes every connection and returns nil. Otherwise it returns the
// error that stopped Accept.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if temporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("replica: accept", "err", err, "retry_in", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-ctx.Done():
					return nil
				}
			}
			return fmt.Errorf("replica: accept: %w", err)
		}
		backoff = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, nc)
		}()
	}
}

// temporary reports whether an Accept error passes (out of file
// descriptors, a deadline), so that Serve should retry.
func temporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// conn is one client connection: a reader (serveConn's goroutine) that
// parses requests and queues them, bounded by a budget, for up to
// maxWorkers workers, and a writer that sends replies in the order they complete,
// flushing when none is waiting.
type conn struct {
	s   *Server
	nc  net.Conn
	r   *bufio.Reader
	w   *bufio.Writer
	log *slog.Logger

	volume string // "" on a control connection
	local  *Local // the bound volume through its fence; nil on control

	bud      *budget
	jobs     chan request
	replies  chan reply
	workers  sync.WaitGroup
	nworkers int          // started; the reader's alone
	busy     atomic.Int32 // workers running a request

	mu      sync.Mutex
	closing bool // the server is stopping: deadlines stay short
}

// request is one parsed request on its way to a worker.
type request struct {
	reqHeader
	cost int64   // bytes held against the budget
	buf  *[]byte // payload
}

func (q *request) payload() []byte {
	if q.buf == nil {
		return nil
	}
	return *q.buf
}

// reply is one reply on its way to the writer.
type reply struct {
	handle uint64
	status uint16
	data   []byte
	buf    *[]byte // returned to the pool once data is written
	cost   int64
}

// budget bounds what one connection holds in flight: requests read but
// not yet answered, and their payload bytes. Only the reader waits on it.
type budget struct {
	mu       sync.Mutex
	cond     sync.Cond
	n, maxN  int
	bytes    int64
	maxBytes int64
}

func newBudget(maxN int, maxBytes int64) *budget {
	b := &budget{maxN: maxN, maxBytes: max(maxBytes, MaxPayload)}
	b.cond.L = &b.mu
	return b
}

func (b *budget) acquire(cost int64) {
	b.mu.Lock()
	for b.n >= b.maxN || (b.n > 0 && b.bytes+cost > b.maxBytes) {
		b.cond.Wait()
	}
	b.n++
	b.bytes += cost
	b.mu.Unlock()
}

func (b *budget) release(cost int64) {
	b.mu.Lock()
	b.n--
	b.bytes -= cost
	b.mu.Unlock()
	b.cond.Signal()
}

func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	c := &conn{
		s:   s,
		nc:  nc,
		r:   bufio.NewReaderSize(nc, 256<<10),
		w:   bufio.NewWriterSize(nc, 256<<10),
		log: s.log.With("remote", remoteName(nc)),
		bud: newBudget(s.maxInFlight, s.maxInFlightBytes),
	}
	stop := context.AfterFunc(ctx, c.shutdown)
	defer stop()
	err := c.run() // never nil: why the connection ended
	if ctx.Err() != nil {
		err = fmt.Errorf("server stopping: %w", err)
	}
	if !errors.Is(err, io.EOF) {
		c.log.Debug("replica: connection ended", "volume", c.volume, "err", err)
	}
}

func remoteName(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return "local"
}

// shutdown stops the reader at once and gives the writer a grace period
// to send the replies of requests in flight.
func (c *conn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
	c.nc.SetReadDeadline(time.Now())
	c.nc.SetWriteDeadline(time.Now().Add(c.s.shutdownGrace))
}

func (c *conn) setReadDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing {
		c.nc.SetReadDeadline(t)
	}
}

func (c *conn) setWriteDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing {
		c.nc.SetWriteDeadline(t)
	}
}

// readPayload reads n bytes into buf, under a deadline unless they are
// already buffered, so that a client cannot hold the reader mid-frame.
func (c *conn) readPayload(buf []byte) error {
	if c.r.Buffered() >= len(buf) {
		_, err := io.ReadFull(c.r, buf)
		return err
	}
	c.setReadDeadline(time.Now().Add(c.s.payloadTimeout))
	_, err := io.ReadFull(c.r, buf)
	c.setReadDeadline(time.Time{})
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readHeader reads the next request header; io.EOF means the client hung
// up between requests.
func (c *conn) readHeader() (reqHeader, error) {
	var b [reqHeaderLen]byte
	if _, err := io.ReadFull(c.r, b[:]); err != nil {
		return reqHeader{}, err
	}
	return parseReqHeader(b[:])
}

// run serves the connection until the client hangs up, breaks the
// protocol or the server stops. It returns once every request it read has
// been answered (or the connection has failed) and no goroutine of the
// connection is left.
func (c *conn) run() error {
	if err := c.handshake(); err != nil {
		return err
	}
	if c.local != nil {
		c.log = c.log.With("volume", c.volume, "epoch", c.local.Fence().Epoch())
	}
	// Both channels hold a whole budget's worth, so neither the reader
	// nor the workers ever block on them: the budget is what stops the
	// reader.
	c.jobs = make(chan request, c.s.maxInFlight)
	c.replies = make(chan reply, c.s.maxInFlight)
	wdone := make(chan struct{})
	go c.writeLoop(wdone)
	err := c.readLoop()
	close(c.jobs)
	c.workers.Wait()
	close(c.replies)
	<-wdone
	return err
}

// handshake reads and answers the hello, synchronously: nothing else may
// run before the connection is bound.
func (c *conn) handshake() error {
	h, err := c.readHeader()
	if err != nil {
		return err
	}
	if h.plen > maxHelloPayload {
		err := fmt.Errorf("replica: hello payload of %d bytes: %w", h.plen, errdefs.ErrInvalidArgument)
		c.sendNow(h.handle, err, nil)
		return err
	}
	payload := make([]byte, h.plen)
	if err := c.readPayload(payload); err != nil {
		return err
	}
	size, err := c.hello(h, payload)
	var data []byte
	if err == nil {
		data = binary.BigEndian.AppendUint64(nil, uint64(size))
	}
	if werr := c.sendNow(h.handle, err, data); werr != nil && err == nil {
		err = werr
	}
	return err
}

func (c *conn) hello(h reqHeader, payload []byte) (int64, error) {
	if h.op != opHello {
		return 0, fmt.Errorf("replica: first request is %v, not hello: %w", h.op, errdefs.ErrInvalidArgument)
	}
	if h.flags != 0 {
		return 0, fmt.Errorf("replica: hello flags %#x: %w", h.flags, errdefs.ErrInvalidArgument)
	}
	if h.length != protoVersion {
		return 0, fmt.Errorf("replica: protocol version %d, this server speaks %d: %w", h.length, protoVersion, errdefs.ErrInvalidArgument)
	}
	strs, err := decodeStrs(payload, 1)
	if err != nil {
		return 0, fmt.Errorf("replica: hello: %w", err)
	}
	if strs[0] == "" {
		return 0, nil // control connection
	}
	if err := errdefs.ValidateName("volume", strs[0]); err != nil {
		return 0, fmt.Errorf("replica: hello: %w", err)
	}
	ch, err := c.s.pool.Open(strs[0])
	if err != nil {
		return 0, err
	}
	l, err := OpenLocal(ch, c.s.epochs, h.off)
	if err != nil {
		return 0, err
	}
	c.volume, c.local = strs[0], l
	return ch.Size(), nil
}

// sendNow writes one reply and flushes, from the reader, before the writer
// runs or instead of it.
func (c *conn) sendNow(handle uint64, err error, data []byte) error {
	rh := replyHeader{handle: handle, status: statusOf(err)}
	if err != nil {
		data = errMessage(err)
	}
	rh.plen = uint32(len(data))
	var b [replyHeaderLen]byte
	rh.put(b[:])
	c.setWriteDeadline(time.Now().Add(c.s.writeTimeout))
	defer c.setWriteDeadline(time.Time{})
	if _, err := c.w.Write(b[:]); err != nil {
		return err
	}
	if _, err := c.w.Write(data); err != nil {
		return err
	}
	return c.w.Flush()
}

// readLoop reads requests and hands each to a goroutine of its own, until
// the connection fails or the client breaks the framing.
func (c *conn) readLoop() error {
	for {
		h, err := c.readHeader()
		if err != nil {
			if err == io.ErrUnexpectedEOF {
				return fmt.Errorf("replica: truncated request header: %w", err)
			}
			return err
		}
		if h.plen > MaxPayload {
			// The frame's end cannot be trusted to be reached: answer and
			// hang up.
			err := fmt.Errorf("replica: %v payload of %d bytes is over the maximum %d: %w", h.op, h.plen, MaxPayload, errdefs.ErrInvalidArgument)
			c.bud.acquire(0)
			c.replies <- reply{handle: h.handle, status: statusOf(err), data: errMessage(err)}
			return err
		}
		q := request{reqHeader: h, cost: int64(h.plen)}
		if h.op == opRead && h.length <= MaxPayload {
			q.cost += int64(h.length)
		}
		c.bud.acquire(q.cost)
		if h.plen > 0 {
			q.buf = getBuf(int(h.plen))
			if err := c.readPayload(*q.buf); err != nil {
				putBuf(q.buf)
				c.bud.release(q.cost)
				return fmt.Errorf("replica: %v payload: %w", h.op, err)
			}
		}
		if err := c.check(&q.reqHeader); err != nil {
			putBuf(q.buf)
			c.replies <- reply{handle: h.handle, status: statusOf(err), data: errMessage(err), cost: q.cost}
			continue
		}
		c.jobs <- q
		// Workers start on demand, up to maxWorkers, and stay until the
		// connection ends: a goroutine per request would grow a fresh
		// stack every time.
		if c.nworkers < c.s.maxWorkers && len(c.jobs) > c.nworkers-int(c.busy.Load()) {
			c.nworkers++
			c.workers.Add(1)
			go c.worker()
		}
	}
}

func (c *conn) worker() {
	defer c.workers.Done()
	for q := range c.jobs {
		c.busy.Add(1)
		c.serve(q)
		c.busy.Add(-1)
	}
}

// check refuses, before any work, the requests the server does not take.
func (c *conn) check(h *reqHeader) error {
	switch {
	case h.op == 0 || h.op >= opEnd:
		return fmt.Errorf("replica: unknown %v: %w", h.op, errdefs.ErrInvalidArgument)
	case h.flags != 0:
		return fmt.Errorf("replica: %v: unknown flags %#x: %w", h.op, h.flags, errdefs.ErrInvalidArgument)
	case h.op == opHello:
		return fmt.Errorf("replica: the connection is already bound: %w", errdefs.ErrInvalidArgument)
	case h.op.dataOp() && c.local == nil:
		return fmt.Errorf("replica: %v on a control connection (hello named no volume): %w", h.op, errdefs.ErrFailedPrecondition)
	case h.op == opRead && h.length > MaxPayload:
		return fmt.Errorf("replica: read of %d bytes is over the maximum %d: %w", h.length, MaxPayload, errdefs.ErrInvalidArgument)
	}
	return nil
}

// serve runs one request and queues its reply.
func (c *conn) serve(q request) {
	data, buf, err := c.do(&q)
	putBuf(q.buf)
	rp := reply{handle: q.handle, data: data, buf: buf, cost: q.cost}
	if err != nil {
		putBuf(buf)
		rp.status, rp.data, rp.buf = statusOf(err), errMessage(err), nil
	}
	c.replies <- rp
}

// writeLoop sends replies, flushing whenever no other is waiting, until
// the reader closes the channel. After a write error it closes the
// connection (so the reader stops) and only drains.
func (c *conn) writeLoop(done chan<- struct{}) {
	defer close(done)
	var werr error
	idle := true
	var hb [replyHeaderLen]byte
	for rp := range c.replies {
		if werr == nil {
			if idle {
				c.setWriteDeadline(time.Now().Add(c.s.writeTimeout))
				idle = false
			}
			rh := replyHeader{status: rp.status, handle: rp.handle, plen: uint32(len(rp.data))}
			rh.put(hb[:])
			if _, werr = c.w.Write(hb[:]); werr == nil {
				_, werr = c.w.Write(rp.data)
			}
			if werr == nil && len(c.replies) == 0 {
				// Let the workers about to reply join this write.
				runtime.Gosched()
				if len(c.replies) == 0 {
					werr = c.w.Flush()
					idle = true
				}
			}
			if werr != nil {
				c.log.Debug("replica: write reply", "err", werr)
				c.nc.Close()
			}
		}
		putBuf(rp.buf)
		c.bud.release(rp.cost)
	}
}

// do runs one request: the reply's payload (and its pooled buffer, if
// any), or an error.
func (c *conn) do(q *request) ([]byte, *[]byte, error) {
	switch q.op {
	case opRead:
		if q.length == 0 {
			return nil, nil, c.local.Fence().Check()
		}
		off, _, err := rangeOf(q.off, q.length)
		if err != nil {
			return nil, nil, err
		}
		buf := getBuf(int(q.length))
		if _, err := c.local.ReadAt(*buf, off); err != nil {
			putBuf(buf)
			return nil, nil, err
		}
		return *buf, buf, nil
	case opWrite:
		off, _, err := rangeOf(q.off, uint64(q.plen))
		if err != nil {
			return nil, nil, err
		}
		_, err = c.local.WriteAt(q.payload(), off)
		return nil, nil, err
	case opFlush:
		return nil, nil, c.local.Flush()
	case opTrim, opZeroes:
		off, n, err := rangeOf(q.off, q.length)
		if err != nil {
			return nil, nil, err
		}
		if q.op == opTrim {
			return nil, nil, c.local.Trim(off, n)
		}
		return nil, nil, c.local.WriteZeroes(off, n)
	case opSize:
		if err := c.local.Fence().Check(); err != nil {
			return nil, nil, err
		}
		return binary.BigEndian.AppendUint64(nil, uint64(c.local.Size())), nil, nil
	case opGrow:
		n, err := toInt64("size", q.length)
		if err != nil {
			return nil, nil, err
		}
		return nil, nil, c.local.Grow(n)
	case opSnapshot:
		s, err := decodeStrs(q.payload(), 1)
		if err != nil {
			return nil, nil, fmt.Errorf("replica: snapshot: %w", err)
		}
		return nil, nil, c.local.Snapshot(s[0])
	case opCreate:
		s, err := decodeStrs(q.payload(), 1)
		if err != nil {
			return nil, nil, fmt.Errorf("replica: create: %w", err)
		}
		n, err := toInt64("size", q.length)
		if err != nil {
			return nil, nil, err
		}
		_, err = c.s.pool.Create(s[0], n)
		return nil, nil, err
	case opDelete:
		s, err := decodeStrs(q.payload(), 1)
		if err != nil {
			return nil, nil, fmt.Errorf("replica: delete: %w", err)
		}
		if err := c.s.pool.Delete(s[0]); err != nil {
			return nil, nil, err
		}
		return nil, nil, c.s.epochs.DropDirty(s[0])
	case opList:
		names, err := c.s.pool.List()
		if err != nil {
			return nil, nil, err
		}
		data, err := encodeStrs(nil, names...)
		return data, nil, err
	case opChecksums:
		return c.checksums(q)
	case opExtents:
		return c.extents(q)
	case opRevert:
		s, err := decodeStrs(q.payload(), 1)
		if err != nil {
			return nil, nil, fmt.Errorf("replica: revert: %w", err)
		}
		return nil, nil, c.local.Revert(s[0])
	case opSnapshots:
		s, err := decodeStrs(q.payload(), 1)
		if err != nil {
			return nil, nil, fmt.Errorf("replica: snapshots: %w", err)
		}
		ch, err := c.s.pool.Open(s[0])
		if err != nil {
			return nil, nil, err
		}
		var names []string
		for _, si := range ch.Snapshots() {
			names = append(names, si.Name)
		}
		data, err := encodeStrs(nil, names...)
		return data, nil, err
	case opDeleteSnapshot:
		s, err := decodeStrs(q.payload(), 2)
		if err != nil {
			return nil, nil, fmt.Errorf("replica: delete-snapshot: %w", err)
		}
		ch, err := c.s.pool.Open(s[0])
		if err != nil {
			return nil, nil, err
		}
		res, err := ch.DeleteSnapshot(s[1])
		if err != nil {
			return nil, nil, err
		}
		return binary.BigEndian.AppendUint64(nil, uint64(res.KeptForClones)), nil, nil
	case opClone:
		s, err := decodeStrs(q.payload(), 3)
		if err != nil {
			return nil, nil, fmt.Errorf("replica: clone: %w", err)
		}
		n, err := toInt64("size", q.length)
		if err != nil {
			return nil, nil, err
		}
		_, err = c.s.pool.Clone(s[0], s[1], s[2], n)
		return nil, nil, err
	case opCheckpoint:
		return nil, nil, c.local.Checkpoint()
	case opDirty:
		s, err := decodeStrs(q.payload(), 1)
		if err != nil {
			return nil, nil, fmt.Errorf("replica: dirty: %w", err)
		}
		if _, err := c.s.pool.Open(s[0]); err != nil {
			return nil, nil, err
		}
		offs, err := c.s.epochs.DirtyRegions(s[0])
		if err != nil {
			return nil, nil, err
		}
		if len(offs) > MaxPayload/8 {
			return nil, nil, ErrDirtyUnknown // more than a reply holds: compare everything
		}
		data := make([]byte, 0, 8*len(offs))
		for _, o := range offs {
			data = binary.BigEndian.AppendUint64(data, uint64(o))
		}
		return data, nil, nil
	}
	return nil, nil, fmt.Errorf("replica: unknown %v: %w", q.op, errdefs.ErrInvalidArgument)
}

func (c *conn) checksums(q *request) ([]byte, *[]byte, error) {
	p := q.payload()
	if len(p) < 8 {
		return nil, nil, fmt.Errorf("replica: checksums: payload of %d bytes has no region: %w", len(p), errdefs.ErrInvalidArgument)
	}
	region, err := toInt64("region", binary.BigEndian.Uint64(p))
	if err != nil {
		return nil, nil, err
	}
	s, err := decodeStrs(p[8:], 1)
	if err != nil {
		return nil, nil, fmt.Errorf("replica: checksums: %w", err)
	}
	off, n, err := rangeOf(q.off, q.length)
	if err != nil {
		return nil, nil, err
	}
	ch, err := c.s.pool.Open(s[0])
	if err != nil {
		return nil, nil, err
	}
	sums, err := Checksums(ch, off, n, region)
	if err != nil {
		return nil, nil, err
	}
	data := make([]byte, 0, len(sums)*sha256.Size)
	for i := range sums {
		data = append(data, sums[i][:]...)
	}
	return data, nil, nil
}

func (c *conn) extents(q *request) ([]byte, *[]byte, error) {
	s, err := decodeStrs(q.payload(), 3)
	if err != nil {
		return nil, nil, fmt.Errorf("replica: extents: %w", err)
	}
	from, err := toInt64("offset", q.off)
	if err != nil {
		return nil, nil, err
	}
	ch, err := c.s.pool.Open(s[0])
	if err != nil {
		return nil, nil, err
	}
	exts, err := ch.ChangedExtents(s[1], s[2])
	if err != nil {
		return nil, nil, err
	}
	var data []byte
	k := 0
	for _, e := range exts {
		if e.Offset < from {
			continue
		}
		if k == maxExtentsPerReply {
			break
		}
		data = binary.BigEndian.AppendUint64(data, uint64(e.Offset))
		data = binary.BigEndian.AppendUint64(data, uint64(e.Length))
		k++
	}
	return data, nil, nil
}

// rangeOf checks that the range [off, off+length) fits in int64, so that
// no end computed from it overflows.
func rangeOf(off, length uint64) (int64, int64, error) {
	if off > math.MaxInt64 || length > math.MaxInt64-off {
		return 0, 0, fmt.Errorf("replica: range [%d, +%d) is out of range: %w", off, length, errdefs.ErrInvalidArgument)
	}
	return int64(off), int64(length), nil
}

func toInt64(what string, v uint64) (int64, error) {
	if v > math.MaxInt64 {
		return 0, fmt.Errorf("replica: %s %d is out of range: %w", what, v, errdefs.ErrInvalidArgument)
	}
	return int64(v), nil
}

// Checksum is the SHA-256 of one region of a volume.
type Checksum [sha256.Size]byte

// Checksums returns the SHA-256 of each region-sized piece of c's range
// [off, off+length), the last one possibly shorter: what `volume check`
// compares between replicas. Blocks never written hash as zeros, so equal
// content gives equal sums whatever the layers. At most MaxPayload/32
// regions; more is errdefs.ErrInvalidArgument.
func Checksums(c *chain.Chain, off, length, region int64) ([]Checksum, error) {
	if region <= 0 {
		return nil, fmt.Errorf("replica: checksum region %d must be positive: %w", region, errdefs.ErrInvalidArgument)
	}
	if off < 0 || length < 0 || length > c.Size()-off {
		return nil, fmt.Errorf("replica: volume %q: checksum range [%d, +%d) outside size %d: %w", c.Name(), off, length, c.Size(), errdefs.ErrInvalidArgument)
	}
	n := length / region
	if length%region != 0 {
		n++
	}
	if n > maxChecksumRegions {
		return nil, fmt.Errorf("replica: %d checksum regions, at most %d: %w", n, maxChecksumRegions, errdefs.ErrInvalidArgument)
	}
	out := make([]Checksum, 0, n)
	buf := make([]byte, min(region, 1<<20, max(length, 1)))
	h := sha256.New()
	end := off + length
	for pos := off; pos < end; {
		re := min(pos+region, end)
		h.Reset()
		for p := pos; p < re; {
			k := min(int64(len(buf)), re-p)
			if _, err := c.ReadAt(buf[:k], p); err != nil {
				return nil, err
			}
			h.Write(buf[:k])
			p += k
		}
		var sum Checksum
		h.Sum(sum[:0])
		out = append(out, sum)
		pos = re
	}
	return out, nil
}
