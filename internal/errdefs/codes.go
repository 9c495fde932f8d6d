package errdefs

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
)

// GRPCCode is the one mapping of this vocabulary to gRPC codes, which the
// REST gateway turns into HTTP codes (InvalidArgument 400, NotFound 404,
// AlreadyExists 409, FailedPrecondition 400, ResourceExhausted 429,
// Unauthenticated 401, PermissionDenied 403, Unavailable 503): the code of
// the first sentinel err wraps, codes.Internal when it wraps none.
func GRPCCode(err error) codes.Code {
	for _, m := range []struct {
		target error
		code   codes.Code
	}{
		{context.Canceled, codes.Canceled},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{ErrInvalidArgument, codes.InvalidArgument},
		{ErrNotFound, codes.NotFound},
		{ErrAlreadyExists, codes.AlreadyExists},
		{ErrFailedPrecondition, codes.FailedPrecondition},
		{ErrNoSpace, codes.ResourceExhausted},
		{ErrUnauthenticated, codes.Unauthenticated},
		{ErrPermissionDenied, codes.PermissionDenied},
		{ErrUnavailable, codes.Unavailable},
	} {
		if errors.Is(err, m.target) {
			return m.code
		}
	}
	return codes.Internal
}
