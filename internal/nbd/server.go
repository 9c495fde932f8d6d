// Package nbd serves block devices over the NBD protocol: the fixed newstyle
// handshake (NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_LIST, NBD_OPT_ABORT and the
// old NBD_OPT_EXPORT_NAME) and simple replies only (structured replies,
// block status and TLS are refused with NBD_REP_ERR_UNSUP). The export name
// is the volume name.
//
// Every export offers FLUSH, FUA, TRIM, WRITE_ZEROES (with NO_HOLE and
// FAST_ZERO) and multi-conn; block sizes are minimum 1, preferred 4096,
// maximum 32 MiB. QEMU (qemu-img, qemu-io), libnbd (nbdinfo, nbdcopy) and
// fio's nbd engine are tested against it.
//
// One connection runs a reader (the connection's goroutine), a bounded pool
// of workers that call the Backend, and one writer that serializes replies,
// which may leave out of order. Memory per connection is bounded by the
// number (WithMaxInFlight) and total payload (64 MiB) of requests in flight;
// WithMaxConnections bounds the number of connections. A client that breaks
// the protocol gets an error reply or is hung up on; one that goes silent in
// the handshake, mid-payload, or stops reading replies is dropped after a
// timeout.
package nbd

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Backend is the device behind one export. The server calls it from many
// goroutines at once (several requests in flight on a connection, several
// connections to one export), so every method must be safe for concurrent
// use. Requests never reach past Size.
type Backend interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Flush() error
	Trim(off, length int64) error
	WriteZeroes(off, length int64) error
	Size() int64
}

// FastZeroer is an optional ability of a Backend: FastZero reports whether
// WriteZeroes is much cheaper than writing zeroes (metadata only). Clients
// that ask for a fast zero (NBD_CMD_FLAG_FAST_ZERO) get NBD_ENOTSUP from a
// backend without it, and then write the zeroes themselves.
type FastZeroer interface {
	FastZero() bool
}

// Exports resolves export names to backends.
type Exports interface {
	// Open returns the backend of export name and a release function the
	// server calls when the connection that opened it ends. A missing export
	// wraps errdefs.ErrNotFound.
	Open(ctx context.Context, name string) (Backend, func(), error)
	// Names lists the exports (NBD_OPT_LIST).
	Names(ctx context.Context) ([]string, error)
}

// Server is an NBD server.
type Server struct {
	exports Exports
	cfg     config
}

type config struct {
	log              *slog.Logger
	handshakeTimeout time.Duration
	payloadTimeout   time.Duration
	shutdownGrace    time.Duration
	workers          int
	maxInFlight      int
	maxInFlightBytes int64
	maxConns         int
}

// Option configures a Server.
type Option func(*config)

// WithLogger sets the logger for connection events; the default discards.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

// WithHandshakeTimeout bounds how long a client may stay silent during the
// handshake (each option must arrive within d). Default 30 s.
func WithHandshakeTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.handshakeTimeout = d
		}
	}
}

// WithWorkers sets how many requests of one connection the backend serves at
// once. Default 16.
func WithWorkers(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.workers = n
		}
	}
}

// WithMaxInFlight caps the requests one connection may have read but not yet
// answered; the server stops reading from a client that reaches it. Default 128.
func WithMaxInFlight(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxInFlight = n
		}
	}
}

// WithMaxConnections caps the connections served at once; a client over the
// cap is hung up on at once. Each connection may hold up to 64 MiB of
// payload in flight, so the cap bounds the server's memory. Default: no cap.
func WithMaxConnections(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxConns = n
		}
	}
}

// NewServer returns a server for exports.
func NewServer(exports Exports, opts ...Option) *Server {
	cfg := config{
		log:              slog.New(slog.DiscardHandler),
		handshakeTimeout: 30 * time.Second,
		payloadTimeout:   60 * time.Second,
		shutdownGrace:    5 * time.Second,
		workers:          16,
		maxInFlight:      128,
		maxInFlightBytes: 2 * MaxPayload,
	}
	for _, o := range opts {
		o(&cfg)
	}
	return &Server{exports: exports, cfg: cfg}
}

// Serve accepts connections on ln until ctx is done or ln is closed, and
// returns after every connection it started has ended. When ctx is done it
// closes ln, stops reading requests, lets the requests in flight finish
// (their replies get a few seconds to leave), closes every connection and
// returns nil. Otherwise it returns the error that stopped Accept.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()

	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var backoff time.Duration
	var active atomic.Int64
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if temporary(err) {
				// Out of file descriptors and the like: wait rather than spin.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.cfg.log.Warn("nbd: accept", "err", err, "retry_in", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-ctx.Done():
					return nil
				}
			}
			return err
		}
		backoff = 0
		if n := active.Add(1); s.cfg.maxConns > 0 && n > int64(s.cfg.maxConns) {
			active.Add(-1)
			s.cfg.log.Warn("nbd: too many connections, refusing one", "remote", conn.RemoteAddr().String(), "max", s.cfg.maxConns)
			conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer active.Add(-1)
			s.serveConn(ctx, conn)
		}()
	}
}

// temporary reports whether an Accept error passes (too many open files,
// a deadline on the listener) so that Serve should retry.
func temporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}
