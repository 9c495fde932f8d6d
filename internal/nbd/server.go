// Package nbd serves block devices over the NBD protocol (fixed newstyle
// handshake, structured replies not negotiated).
package nbd

import (
	"context"
	"errors"
	"net"
)

// Backend is the device behind one export.
type Backend interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Flush() error
	Trim(off, length int64) error
	WriteZeroes(off, length int64) error
	Size() int64
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
type Server struct{ exports Exports }

// NewServer returns a server for exports.
func NewServer(exports Exports) *Server { return &Server{exports: exports} }

// Serve accepts connections on ln until ctx is done or ln is closed, and
// returns after every connection it started has ended.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return errors.New("nbd: not implemented yet")
}
