package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/strata-storage/strata/internal/errdefs"
)

// Export is what a client learns of an export in the handshake.
type Export struct {
	// Size is the export's size in bytes.
	Size int64
	// Flags are the transmission flags (NBD_FLAG_*), as the kernel's NBD
	// client takes them (NBD_ATTR_SERVER_FLAGS).
	Flags uint16
}

// FlagReadOnly is the transmission flag of a read-only export
// (NBD_FLAG_READ_ONLY); the kernel's NBD client makes the device read-only.
const FlagReadOnly uint16 = flagReadOnly

// Handshake runs the client side of the fixed newstyle handshake on rw and
// selects export name with NBD_OPT_GO, without structured replies. It reads
// nothing past the handshake, so rw is left in the transmission phase: for
// handing the connection to the kernel's NBD client. An export the server
// does not have wraps errdefs.ErrNotFound; one it cannot serve now (being
// deleted, shutting down) errdefs.ErrUnavailable.
func Handshake(rw io.ReadWriter, name string) (Export, error) {
	if len(name) > maxStringLength {
		return Export{}, fmt.Errorf("nbd: export name of %d bytes: %w", len(name), errdefs.ErrInvalidArgument)
	}
	var hello [18]byte
	if _, err := io.ReadFull(rw, hello[:]); err != nil {
		return Export{}, fmt.Errorf("nbd: read greeting: %w", err)
	}
	if be64(hello[0:]) != nbdMagic || be64(hello[8:]) != optMagic {
		return Export{}, errors.New("nbd: not a newstyle NBD server")
	}
	hs := be16(hello[16:])
	if hs&flagFixedNewstyle == 0 {
		return Export{}, errors.New("nbd: server does not speak fixed newstyle")
	}
	cf := uint32(clientFlagFixedNewstyle)
	if hs&flagNoZeroes != 0 {
		cf |= clientFlagNoZeroes
	}
	// Client flags, then NBD_OPT_GO asking for the block size constraints.
	msg := make([]byte, 4, 4+16+4+len(name)+4)
	put32(msg, cf)
	msg = append(msg, make([]byte, 16+4+len(name)+4)...)
	opt := msg[4:]
	put64(opt[0:], optMagic)
	put32(opt[8:], optGo)
	put32(opt[12:], uint32(4+len(name)+4))
	put32(opt[16:], uint32(len(name)))
	copy(opt[20:], name)
	put16(opt[20+len(name):], 1)
	put16(opt[22+len(name):], infoBlockSize)
	if _, err := rw.Write(msg); err != nil {
		return Export{}, fmt.Errorf("nbd: send NBD_OPT_GO: %w", err)
	}

	var exp Export
	haveExport := false
	for {
		var h [20]byte
		if _, err := io.ReadFull(rw, h[:]); err != nil {
			return Export{}, fmt.Errorf("nbd: read option reply: %w", err)
		}
		if be64(h[0:]) != repMagic || be32(h[8:]) != optGo {
			return Export{}, errors.New("nbd: bad option reply")
		}
		typ, length := be32(h[12:]), be32(h[16:])
		if length > maxOptionLength {
			return Export{}, fmt.Errorf("nbd: option reply of %d bytes", length)
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(rw, data); err != nil {
			return Export{}, fmt.Errorf("nbd: read option reply: %w", err)
		}
		switch {
		case typ == repAck:
			if !haveExport {
				return Export{}, errors.New("nbd: server acknowledged NBD_OPT_GO without describing the export")
			}
			return exp, nil
		case typ == repInfo:
			if len(data) >= 12 && be16(data) == infoExport {
				exp = Export{Size: int64(be64(data[2:])), Flags: be16(data[10:])}
				haveExport = exp.Size >= 0
			}
		case typ&repFlagError != 0:
			return Export{}, replyError(typ, name, string(data))
		}
		// Other replies (information not asked for) are skipped.
	}
}

// replyError turns an option error reply into an error.
func replyError(typ uint32, name, msg string) error {
	var kind error
	switch typ {
	case repErrUnknown:
		kind = errdefs.ErrNotFound
	case repErrShutdown:
		kind = errdefs.ErrUnavailable
	case repErrPolicy:
		kind = errdefs.ErrPermissionDenied
	default:
		kind = errdefs.ErrUnavailable
	}
	if msg == "" {
		msg = fmt.Sprintf("error %#x", typ)
	}
	return fmt.Errorf("nbd: export %q: %s: %w", name, msg, kind)
}

// ServeConn serves one connection the caller made (one end of a socket
// pair whose other end goes to the kernel's NBD client, say), as Serve
// serves an accepted one, and returns when the connection ends. When ctx
// is done the connection is shut down as Serve shuts down its own.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) {
	s.serveConn(ctx, nc)
}
