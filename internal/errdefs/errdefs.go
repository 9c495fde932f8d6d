// Package errdefs is Strata's one error vocabulary. Every package wraps these
// sentinels (fmt.Errorf("volume %q: %w", name, errdefs.ErrNotFound));
// GRPCCode maps them to gRPC (and so HTTP) codes, for the API server and the
// CSI driver alike.
package errdefs

import (
	"errors"
	"syscall"
)

var (
	// ErrInvalidArgument: the request is malformed (bad name, bad size, bad option).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: the named object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: an object with that name exists with a different spec.
	ErrAlreadyExists = errors.New("already exists")
	// ErrFailedPrecondition: the object is in a state that forbids the call
	// (deleting a mounted volume, shrinking a volume).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrNoSpace: the pool is full.
	ErrNoSpace = syscall.ENOSPC
	// ErrUnauthenticated: no valid token.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: the token's role does not allow the call.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrUnavailable: a dependency (etcd, a replica) cannot be reached now; retry.
	ErrUnavailable = errors.New("unavailable")
)
