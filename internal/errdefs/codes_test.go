package errdefs

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
)

func TestGRPCCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("volume %q: %w", "v", ErrNotFound), codes.NotFound},
		{fmt.Errorf("write: %w", syscall.ENOSPC), codes.ResourceExhausted},
		{fmt.Errorf("call: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("a: %w", fmt.Errorf("b: %w", ErrFailedPrecondition)), codes.FailedPrecondition},
		{errors.New("disk on fire"), codes.Internal},
	} {
		if got := GRPCCode(c.err); got != c.want {
			t.Errorf("GRPCCode(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
