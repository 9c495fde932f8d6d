package server

import (
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/strata-storage/strata/internal/errdefs"
)

// toStatus turns an error into a gRPC status error with the code
// errdefs.GRPCCode gives it (the one place Strata's error vocabulary becomes
// gRPC and HTTP codes). The message is the error's text on one line.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err
	}
	code := errdefs.GRPCCode(err)
	msg := strings.Join(strings.Fields(err.Error()), " ")
	if code == codes.ResourceExhausted {
		msg += " (the pool is full: free space by deleting volumes or snapshots)"
	}
	return status.Error(code, msg)
}
