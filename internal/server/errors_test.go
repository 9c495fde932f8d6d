package server

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
)

func TestToStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("volume %q: %w", "a", errdefs.ErrInvalidArgument), codes.InvalidArgument},
		{fmt.Errorf("volume %q: %w", "a", errdefs.ErrNotFound), codes.NotFound},
		{fmt.Errorf("x: %w", errdefs.ErrAlreadyExists), codes.AlreadyExists},
		{fmt.Errorf("x: %w", errdefs.ErrFailedPrecondition), codes.FailedPrecondition},
		{meta.ErrConflict, codes.FailedPrecondition},
		{fmt.Errorf("write: %w", syscall.ENOSPC), codes.ResourceExhausted},
		{fmt.Errorf("x: %w", errdefs.ErrUnauthenticated), codes.Unauthenticated},
		{fmt.Errorf("x: %w", errdefs.ErrPermissionDenied), codes.PermissionDenied},
		{fmt.Errorf("x: %w", errdefs.ErrUnavailable), codes.Unavailable},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{errors.New("something broke"), codes.Internal},
		{status.Error(codes.Aborted, "as is"), codes.Aborted},
	} {
		st := status.Convert(toStatus(tc.err))
		if st.Code() != tc.want {
			t.Errorf("%v: code %v, want %v", tc.err, st.Code(), tc.want)
		}
		if st.Message() == "" {
			t.Errorf("%v: empty message", tc.err)
		}
	}
	if toStatus(nil) != nil {
		t.Error("nil error mapped to a status")
	}
	if m := status.Convert(toStatus(errors.New("two\nlines"))).Message(); m != "two lines" {
		t.Errorf("message %q is not one line", m)
	}
}
