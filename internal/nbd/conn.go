package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// errAbort ends a connection whose client sent NBD_OPT_ABORT.
var errAbort = errors.New("nbd: client aborted the handshake")

// conn is one client connection.
type conn struct {
	cfg      *config
	exports  Exports
	nc       net.Conn
	r        *bufio.Reader
	w        *bufio.Writer
	log      *slog.Logger
	noZeroes bool

	mu      sync.Mutex
	closing bool // the server is shutting down: deadlines stay short
}

func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	c := &conn{
		cfg:     &s.cfg,
		exports: s.exports,
		nc:      nc,
		r:       bufio.NewReaderSize(nc, 64<<10),
		w:       bufio.NewWriterSize(nc, 64<<10),
		log:     s.cfg.log.With("remote", remoteName(nc)),
	}
	stop := context.AfterFunc(ctx, c.shutdown)
	defer stop()

	be, release, err := c.handshake(ctx)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("server shutting down: %w", err)
		}
		if !errors.Is(err, errAbort) {
			c.log.Debug("nbd: handshake failed", "err", err)
		}
		return
	}
	defer release()
	c.log.Debug("nbd: transmission started")
	err = c.transmit(be)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("server shutting down: %w", err)
	}
	c.log.Debug("nbd: connection ended", "err", err)
}

// remoteName names the client in logs; a socket pair's end has no address.
func remoteName(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return "local"
}

// shutdown stops the reader at once and gives the writer a grace period to
// send the replies of requests in flight.
func (c *conn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
	c.nc.SetReadDeadline(time.Now())
	c.nc.SetWriteDeadline(time.Now().Add(c.cfg.shutdownGrace))
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

// Put and get big-endian numbers. encoding/binary would do, but these keep
// the header code short.
func be16(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }
func be32(b []byte) uint32 { return uint32(be16(b))<<16 | uint32(be16(b[2:])) }
func be64(b []byte) uint64 { return uint64(be32(b))<<32 | uint64(be32(b[4:])) }

func put16(b []byte, v uint16) { b[0], b[1] = byte(v>>8), byte(v) }
func put32(b []byte, v uint32) { put16(b, uint16(v>>16)); put16(b[2:], uint16(v)) }
func put64(b []byte, v uint64) { put32(b, uint32(v>>32)); put32(b[4:], uint32(v)) }

// handshake runs the fixed newstyle negotiation. It returns the export the
// client chose and its release func, or an error after which the
// connection must be closed.
func (c *conn) handshake(ctx context.Context) (Backend, func(), error) {
	c.setDeadlines(time.Now().Add(c.cfg.handshakeTimeout))

	var hello [18]byte
	put64(hello[0:], nbdMagic)
	put64(hello[8:], optMagic)
	put16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.w.Write(hello[:]); err != nil {
		return nil, nil, err
	}
	if err := c.w.Flush(); err != nil {
		return nil, nil, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.r, cf[:]); err != nil {
		return nil, nil, fmt.Errorf("read client flags: %w", err)
	}
	clientFlags := be32(cf[:])
	if clientFlags&^clientFlagsKnown != 0 {
		return nil, nil, fmt.Errorf("unknown client flags %#x", clientFlags)
	}
	c.noZeroes = clientFlags&clientFlagNoZeroes != 0

	var hdr [16]byte
	for {
		// The deadline is per option: a client that goes silent is dropped.
		c.setDeadlines(time.Now().Add(c.cfg.handshakeTimeout))
		if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
			return nil, nil, fmt.Errorf("read option: %w", err)
		}
		if m := be64(hdr[0:]); m != optMagic {
			return nil, nil, fmt.Errorf("bad option magic %#x", m)
		}
		opt, length := be32(hdr[8:]), be32(hdr[12:])
		if length > maxOptionLength {
			return nil, nil, fmt.Errorf("option %d: data length %d over the limit %d", opt, length, maxOptionLength)
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(c.r, data); err != nil {
			return nil, nil, fmt.Errorf("read option %d data: %w", opt, err)
		}

		switch opt {
		case optExportName:
			be, release, err := c.exportName(ctx, data)
			if err != nil {
				return nil, nil, err
			}
			c.setDeadlines(time.Time{})
			c.log = c.log.With("export", string(data))
			return be, release, nil
		case optGo, optInfo:
			be, release, err := c.info(ctx, opt, data)
			if err != nil {
				return nil, nil, err
			}
			if be != nil {
				c.setDeadlines(time.Time{})
				c.log = c.log.With("export", string(data[4:4+be32(data)]))
				return be, release, nil
			}
		case optList:
			if err := c.list(ctx, data); err != nil {
				return nil, nil, err
			}
		case optAbort:
			// The spec asks for an ACK; the client may already be gone.
			c.optReply(opt, repAck, nil)
			c.w.Flush()
			return nil, nil, errAbort
		default:
			// Includes NBD_OPT_STRUCTURED_REPLY and NBD_OPT_STARTTLS: simple
			// replies and no TLS.
			if err := c.optError(opt, repErrUnsup, fmt.Sprintf("option %d is not supported", opt)); err != nil {
				return nil, nil, err
			}
		}
	}
}

func (c *conn) setDeadlines(t time.Time) {
	c.setReadDeadline(t)
	c.setWriteDeadline(t)
}

// optReply queues one option reply; the caller flushes.
func (c *conn) optReply(opt, typ uint32, data []byte) error {
	var h [20]byte
	put64(h[0:], repMagic)
	put32(h[8:], opt)
	put32(h[12:], typ)
	put32(h[16:], uint32(len(data)))
	if _, err := c.w.Write(h[:]); err != nil {
		return err
	}
	_, err := c.w.Write(data)
	return err
}

// optError sends an error reply with a message for the user.
func (c *conn) optError(opt, typ uint32, msg string) error {
	if len(msg) > maxStringLength {
		msg = msg[:maxStringLength]
	}
	if err := c.optReply(opt, typ, []byte(msg)); err != nil {
		return err
	}
	return c.w.Flush()
}

// exportName handles NBD_OPT_EXPORT_NAME, which cannot report an error: a
// failure closes the connection.
func (c *conn) exportName(ctx context.Context, name []byte) (Backend, func(), error) {
	if len(name) > maxStringLength {
		return nil, nil, fmt.Errorf("export name of %d bytes", len(name))
	}
	be, release, err := c.exports.Open(ctx, string(name))
	if err != nil {
		return nil, nil, fmt.Errorf("open export %q: %w", name, err)
	}
	size := exportSize(be)
	var b [10 + 124]byte
	put64(b[0:], uint64(size))
	put16(b[8:], transmissionFlags(be))
	n := len(b)
	if c.noZeroes {
		n = 10
	}
	if _, err := c.w.Write(b[:n]); err != nil {
		release()
		return nil, nil, err
	}
	if err := c.w.Flush(); err != nil {
		release()
		return nil, nil, err
	}
	return be, release, nil
}

// info handles NBD_OPT_INFO and NBD_OPT_GO. For a successful NBD_OPT_GO it
// returns the export; for everything else a nil Backend and, if the
// connection is still usable, a nil error.
func (c *conn) info(ctx context.Context, opt uint32, data []byte) (Backend, func(), error) {
	if len(data) < 6 {
		return nil, nil, c.optError(opt, repErrInvalid, "option data too short")
	}
	nameLen := be32(data)
	if uint64(nameLen) > uint64(len(data)-6) {
		return nil, nil, c.optError(opt, repErrInvalid, "export name length beyond the option data")
	}
	if nameLen > maxStringLength {
		return nil, nil, c.optError(opt, repErrInvalid, "export name longer than 4096 bytes")
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	nreq := int(be16(rest))
	rest = rest[2:]
	if len(rest) != 2*nreq {
		return nil, nil, c.optError(opt, repErrInvalid, "information request count does not match the option length")
	}
	var wantName bool
	for i := 0; i < nreq; i++ {
		if be16(rest[2*i:]) == infoName {
			wantName = true
		}
	}

	be, release, err := c.exports.Open(ctx, name)
	if err != nil {
		typ := openErrorReply(ctx, err)
		c.log.Debug("nbd: open export", "export", name, "err", err)
		return nil, nil, c.optError(opt, typ, fmt.Sprintf("export %q: %v", name, err))
	}
	ok := false
	defer func() {
		if !ok {
			release()
		}
	}()

	var exp [12]byte
	put16(exp[0:], infoExport)
	put64(exp[2:], uint64(exportSize(be)))
	put16(exp[10:], transmissionFlags(be))
	if opt == optInfo {
		// NBD_OPT_INFO only looks: let go before the client hears back.
		release()
		ok = true
	}
	if err := c.optReply(opt, repInfo, exp[:]); err != nil {
		return nil, nil, err
	}
	// Sent whether asked or not: the spec allows it, and clients that did
	// not ask are free to ignore it.
	var bs [14]byte
	put16(bs[0:], infoBlockSize)
	put32(bs[2:], minBlockSize)
	put32(bs[6:], preferredBlockSize)
	put32(bs[10:], MaxPayload)
	if err := c.optReply(opt, repInfo, bs[:]); err != nil {
		return nil, nil, err
	}
	if wantName {
		if err := c.optReply(opt, repInfo, append([]byte{0, infoName}, name...)); err != nil {
			return nil, nil, err
		}
	}
	if err := c.optReply(opt, repAck, nil); err != nil {
		return nil, nil, err
	}
	if err := c.w.Flush(); err != nil {
		return nil, nil, err
	}
	ok = true
	if opt == optInfo {
		return nil, nil, nil
	}
	return be, release, nil
}

// list handles NBD_OPT_LIST.
func (c *conn) list(ctx context.Context, data []byte) error {
	if len(data) != 0 {
		return c.optError(optList, repErrInvalid, "NBD_OPT_LIST takes no data")
	}
	names, err := c.exports.Names(ctx)
	if err != nil {
		c.log.Debug("nbd: list exports", "err", err)
		// The spec's error for a list that cannot be produced; the client
		// disconnects and may retry later.
		return c.optError(optList, repErrShutdown, fmt.Sprintf("list exports: %v", err))
	}
	for _, n := range names {
		if len(n) > maxStringLength {
			continue
		}
		b := make([]byte, 4+len(n))
		put32(b, uint32(len(n)))
		copy(b[4:], n)
		if err := c.optReply(optList, repServer, b); err != nil {
			return err
		}
	}
	if err := c.optReply(optList, repAck, nil); err != nil {
		return err
	}
	return c.w.Flush()
}

func exportSize(be Backend) int64 {
	return max(be.Size(), 0)
}

// transmissionFlags are the same for every export: the backend is one device
// shared by every connection, so flushes are visible everywhere (multi-conn).
func transmissionFlags(be Backend) uint16 {
	return flagHasFlags | flagSendFlush | flagSendFUA | flagSendTrim |
		flagSendWriteZeroes | flagCanMultiConn | flagSendFastZero
}
