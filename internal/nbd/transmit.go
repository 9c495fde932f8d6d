package nbd

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// request is one parsed transmission request.
type request struct {
	typ    uint16
	flags  uint16
	handle uint64
	off    int64
	length uint32
	cost   int64   // bytes held against the connection's budget
	buf    *[]byte // NBD_CMD_WRITE payload
}

// reply is one simple reply on its way to the writer.
type reply struct {
	handle uint64
	errno  uint32
	data   []byte  // NBD_CMD_READ payload, sent only when errno is 0
	buf    *[]byte // returned to the pool once data is written
	cost   int64
}

// budget bounds what one connection holds in flight: requests read but not
// yet answered, and their payload bytes. Only the reader waits on it.
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
	for b.n >= b.maxN || b.bytes+cost > b.maxBytes {
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

var (
	errBadMagic  = errors.New("bad request magic")
	errTooLarge  = errors.New("write payload over the maximum")
	errShortRead = errors.New("short read from backend")
)

// transmit serves requests until the client disconnects, breaks the
// protocol, or the server shuts down. It returns once every request it
// accepted has been answered (or the connection has failed) and no
// goroutine of the connection touches the backend any more.
func (c *conn) transmit(be Backend) error {
	bud := newBudget(c.cfg.maxInFlight, c.cfg.maxInFlightBytes)
	// Both channels hold a whole budget's worth, so workers and the reader
	// never block on them; the budget is what stops the reader.
	jobs := make(chan *request, c.cfg.maxInFlight)
	replies := make(chan reply, c.cfg.maxInFlight)

	var workers sync.WaitGroup
	for range c.cfg.workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for req := range jobs {
				replies <- c.do(be, req)
			}
		}()
	}
	writerDone := make(chan struct{})
	go c.writeReplies(replies, bud, writerDone)

	err := c.readRequests(be, bud, jobs, replies)

	close(jobs)
	workers.Wait()
	close(replies)
	<-writerDone
	return err
}

// readRequests parses requests and hands them to the workers; requests it
// can refuse from the header alone are answered here without the backend.
func (c *conn) readRequests(be Backend, bud *budget, jobs chan<- *request, replies chan<- reply) error {
	size := uint64(exportSize(be))
	refuse := func(handle uint64, errno uint32) {
		bud.acquire(0)
		replies <- reply{handle: handle, errno: errno}
	}
	var hdr [requestBytes]byte
	for {
		if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil // hard disconnect between requests
			}
			return fmt.Errorf("read request: %w", err)
		}
		if m := be32(hdr[0:]); m != requestMagic {
			return fmt.Errorf("%w %#x", errBadMagic, m)
		}
		req := &request{
			flags:  be16(hdr[4:]),
			typ:    be16(hdr[6:]),
			handle: be64(hdr[8:]),
			length: be32(hdr[24:]),
		}
		off := be64(hdr[16:])
		inRange := off <= size && uint64(req.length) <= size-off
		if !inRange {
			// The export may have grown since: volumes grow online, and
			// the kernel's NBD client (internal/nbddev) takes the new size.
			size = max(size, uint64(exportSize(be)))
			inRange = off <= size && uint64(req.length) <= size-off
		}
		req.off = int64(off) // only used when inRange, so it fits

		switch req.typ {
		case cmdDisc:
			return nil
		case cmdWrite:
			if req.length > MaxPayload {
				// The payload cannot be skipped safely: refuse and hang up.
				refuse(req.handle, errInval)
				return fmt.Errorf("%w: %d bytes", errTooLarge, req.length)
			}
			var errno uint32
			switch {
			case req.flags&^cmdFlagFUA != 0:
				errno = errInval
			case !inRange:
				errno = errNoSpc
			}
			if errno != 0 {
				if err := c.readPayload(nil, int64(req.length)); err != nil {
					return err
				}
				refuse(req.handle, errno)
				continue
			}
			req.cost = int64(req.length)
			bud.acquire(req.cost)
			if req.length > 0 {
				req.buf = getBuf(int(req.length))
				if err := c.readPayload(*req.buf, int64(req.length)); err != nil {
					putBuf(req.buf)
					bud.release(req.cost)
					return err
				}
			}
			jobs <- req
		case cmdRead:
			switch {
			case req.flags&^cmdFlagFUA != 0, req.length > MaxPayload, !inRange:
				refuse(req.handle, errInval)
				continue
			}
			req.cost = int64(req.length)
			bud.acquire(req.cost)
			jobs <- req
		case cmdFlush:
			if req.flags&^cmdFlagFUA != 0 {
				refuse(req.handle, errInval)
				continue
			}
			bud.acquire(0)
			jobs <- req
		case cmdTrim:
			switch {
			case req.flags&^cmdFlagFUA != 0, !inRange:
				refuse(req.handle, errInval)
				continue
			}
			bud.acquire(0)
			jobs <- req
		case cmdWriteZeroes:
			switch {
			case req.flags&^(cmdFlagFUA|cmdFlagNoHole|cmdFlagFastZero) != 0:
				refuse(req.handle, errInval)
				continue
			case !inRange:
				refuse(req.handle, errNoSpc)
				continue
			}
			bud.acquire(0)
			jobs <- req
		default:
			// Unknown commands carry no payload that we know of.
			refuse(req.handle, errInval)
		}
	}
}

// readPayload reads n bytes of a write into p, or discards them if p is
// nil. The client must send the payload right after the header: one that
// stalls mid-payload is dropped after the I/O timeout.
func (c *conn) readPayload(p []byte, n int64) error {
	if n == 0 {
		return nil
	}
	c.setReadDeadline(time.Now().Add(c.cfg.payloadTimeout))
	var err error
	if p == nil {
		_, err = io.CopyN(io.Discard, c.r, n)
	} else {
		_, err = io.ReadFull(c.r, p)
	}
	c.setReadDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("read write payload: %w", err)
	}
	return nil
}

// do runs one request against the backend.
func (c *conn) do(be Backend, req *request) reply {
	r := reply{handle: req.handle, cost: req.cost}
	var err error
	switch req.typ {
	case cmdRead:
		if req.length == 0 {
			break
		}
		r.buf = getBuf(int(req.length))
		var n int
		n, err = be.ReadAt(*r.buf, req.off)
		if n == len(*r.buf) {
			err = nil // io.ReaderAt may report io.EOF with a full read at the end
		} else if err == nil {
			err = errShortRead
		}
		r.data = *r.buf
	case cmdWrite:
		if req.buf != nil {
			_, err = be.WriteAt(*req.buf, req.off)
			putBuf(req.buf)
		}
		if err == nil && req.flags&cmdFlagFUA != 0 {
			err = be.Flush()
		}
	case cmdFlush:
		err = be.Flush()
	case cmdTrim:
		if req.length > 0 {
			err = be.Trim(req.off, int64(req.length))
		}
		if err == nil && req.flags&cmdFlagFUA != 0 {
			err = be.Flush()
		}
	case cmdWriteZeroes:
		if req.flags&cmdFlagFastZero != 0 {
			if fz, ok := be.(FastZeroer); !ok || !fz.FastZero() {
				r.errno = errNotSup // fail fast, change nothing
				return r
			}
		}
		// NBD_CMD_FLAG_NO_HOLE asks that the range stay allocated; the
		// backend's WriteZeroes is the one zeroing primitive we have.
		if req.length > 0 {
			err = be.WriteZeroes(req.off, int64(req.length))
		}
		if err == nil && req.flags&cmdFlagFUA != 0 {
			err = be.Flush()
		}
	}
	if err != nil {
		r.errno = errnoOf(err)
		c.log.Warn("nbd: backend", "cmd", req.typ, "offset", req.off, "length", req.length, "err", err)
	}
	return r
}

// writeReplies is the only writer of the connection in transmission. It
// batches replies that are ready together into one flush. After a write
// error it closes the connection (which stops the reader) and keeps
// draining so that workers and the budget never block.
func (c *conn) writeReplies(replies <-chan reply, bud *budget, done chan<- struct{}) {
	defer close(done)
	var hdr [replyBytes]byte
	var deadlineSet time.Time
	failed := false
	fail := func(err error) {
		failed = true
		c.log.Debug("nbd: write reply", "err", err)
		c.nc.Close()
	}
	for r := range replies {
		if !failed {
			// A client that stops reading replies is dropped after the I/O
			// timeout. Moving the deadline costs a little, so it moves only
			// when it has aged; it never comes closer than 7/8 of the timeout.
			if now := time.Now(); now.Sub(deadlineSet) > c.cfg.payloadTimeout/8 {
				c.setWriteDeadline(now.Add(c.cfg.payloadTimeout))
				deadlineSet = now
			}
			put32(hdr[0:], simpleRepMagic)
			put32(hdr[4:], r.errno)
			put64(hdr[8:], r.handle)
			_, err := c.w.Write(hdr[:])
			if err == nil && r.errno == 0 && len(r.data) > 0 {
				_, err = c.w.Write(r.data)
			}
			if err != nil {
				fail(err)
			}
		}
		putBuf(r.buf)
		bud.release(r.cost)
		if !failed && len(replies) == 0 {
			if err := c.w.Flush(); err != nil {
				fail(err)
			}
		}
	}
	if !failed {
		if err := c.w.Flush(); err != nil {
			fail(err)
		}
	}
}
