package server

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/strata-storage/strata/internal/errdefs"
)

// toStatus is the one place where Strata's error vocabulary (errdefs)
// becomes gRPC codes; the REST gateway derives HTTP codes from those
// (InvalidArgument 400, NotFound 404, AlreadyExists 409, FailedPrecondition
// 400, ResourceExhausted 429, Unauthenticated 401, PermissionDenied 403,
// Unavailable 503). The message is the error's text on one line.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err
	}
	code := codes.Internal
	for _, m := range []struct {
		target error
		code   codes.Code
	}{
		{context.Canceled, codes.Canceled},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errdefs.ErrInvalidArgument, codes.InvalidArgument},
		{errdefs.ErrNotFound, codes.NotFound},
		{errdefs.ErrAlreadyExists, codes.AlreadyExists},
		{errdefs.ErrFailedPrecondition, codes.FailedPrecondition},
		{errdefs.ErrNoSpace, codes.ResourceExhausted},
		{errdefs.ErrUnauthenticated, codes.Unauthenticated},
		{errdefs.ErrPermissionDenied, codes.PermissionDenied},
		{errdefs.ErrUnavailable, codes.Unavailable},
	} {
		if errors.Is(err, m.target) {
			code = m.code
			break
		}
	}
	msg := strings.Join(strings.Fields(err.Error()), " ")
	if code == codes.ResourceExhausted {
		msg += " (the pool is full: free space by deleting volumes or snapshots)"
	}
	return status.Error(code, msg)
}
