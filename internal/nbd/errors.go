package nbd

import (
	"context"
	"errors"
	"syscall"

	"github.com/strata-storage/strata/internal/errdefs"
)

// openErrorReply maps an error of Exports.Open to the option reply that
// tells the client why it cannot have the export.
func openErrorReply(ctx context.Context, err error) uint32 {
	switch {
	case errors.Is(err, errdefs.ErrNotFound), errors.Is(err, errdefs.ErrInvalidArgument):
		// A name that is not a valid volume name names no export either.
		return repErrUnknown
	case errors.Is(err, errdefs.ErrPermissionDenied), errors.Is(err, errdefs.ErrUnauthenticated):
		return repErrPolicy
	case ctx.Err() != nil, errors.Is(err, errdefs.ErrUnavailable),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// The client must disconnect; it may come back later.
		return repErrShutdown
	default:
		return repErrUnknown
	}
}

// errnoOf maps a backend error to the error of a simple reply.
func errnoOf(err error) uint32 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return errNoSpc
	case errors.Is(err, syscall.EROFS):
		return errPerm
	default:
		return errIO
	}
}
