package client

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/strata-storage/strata/internal/errdefs"
)

// Error is an error returned by the API server, translated: Error() is the
// server's message without gRPC's "rpc error: code = ..." prefix, errors.Is
// matches the errdefs sentinel of its code (codes.NotFound matches
// errdefs.ErrNotFound, ...), and status.Code(err) still returns the code.
type Error struct {
	code codes.Code
	msg  string
	kind error // errdefs sentinel, or nil
}

// Error returns the server's message.
func (e *Error) Error() string { return e.msg }

// Unwrap returns the errdefs sentinel of the error's code, or nil.
func (e *Error) Unwrap() error { return e.kind }

// Code returns the gRPC code the server sent.
func (e *Error) Code() codes.Code { return e.code }

// GRPCStatus lets status.Code and status.FromError see the original code.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.code, e.msg) }

var sentinels = map[codes.Code]error{
	codes.InvalidArgument:    errdefs.ErrInvalidArgument,
	codes.OutOfRange:         errdefs.ErrInvalidArgument,
	codes.NotFound:           errdefs.ErrNotFound,
	codes.AlreadyExists:      errdefs.ErrAlreadyExists,
	codes.FailedPrecondition: errdefs.ErrFailedPrecondition,
	codes.ResourceExhausted:  errdefs.ErrNoSpace,
	codes.Unauthenticated:    errdefs.ErrUnauthenticated,
	codes.PermissionDenied:   errdefs.ErrPermissionDenied,
	codes.Unavailable:        errdefs.ErrUnavailable,
}

// translate turns a gRPC status error into an *Error. connDown says the
// connection to addr is not established, so that an Unavailable error is the
// client's failure to reach the server rather than the server's answer.
func translate(err error, addr string, connDown bool) error {
	if err == nil {
		return nil
	}
	var done *Error
	if errors.As(err, &done) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	code, msg := st.Code(), strings.TrimSpace(st.Message())
	if code == codes.Unavailable && (connDown || isTransportMessage(msg)) {
		return &Error{code: code, kind: errdefs.ErrUnavailable, msg: unreachable(addr, msg)}
	}
	if msg == "" {
		msg = strings.ToLower(splitCamel(code.String()))
	}
	switch code {
	case codes.Unauthenticated:
		if !strings.Contains(msg, "--token") && !strings.Contains(msg, "client config") {
			msg += fmt.Sprintf(" (check --token, %s or the client config written by `strata up`)", EnvToken)
		}
	case codes.Unimplemented:
		msg = "the Strata API server does not support this call (is it an older version than this client?): " + msg
	}
	// The CLI prints errors on one line.
	msg = strings.Join(strings.Fields(msg), " ")
	return &Error{code: code, msg: msg, kind: sentinels[code]}
}

// isTransportMessage recognises the messages grpc-go itself makes when it
// cannot connect, as opposed to an Unavailable answer from the server.
func isTransportMessage(msg string) bool {
	for _, s := range []string{"connection error", "transport:", "name resolver error", "error reading server preface", "connection closed before server preface"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// unreachable says the server at addr cannot be reached, with the last part
// of grpc's explanation ("connection refused", "no such host").
func unreachable(addr, msg string) string {
	out := fmt.Sprintf("cannot reach the Strata API at %s: is `strata up` running?", addr)
	cause := strings.Trim(strings.TrimSpace(msg), `"`)
	if i := strings.LastIndex(cause, ": "); i >= 0 {
		cause = cause[i+2:]
	}
	cause = strings.Trim(strings.TrimSpace(cause), `"`)
	if cause != "" {
		out += " (" + strings.Join(strings.Fields(cause), " ") + ")"
	}
	return out
}

// splitCamel turns "NotFound" into "Not Found".
func splitCamel(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// The errors that errors from the API match with errors.Is, by gRPC code:
// Strata's errdefs vocabulary, re-exported for programs outside this module.
var (
	ErrInvalidArgument    = errdefs.ErrInvalidArgument    // InvalidArgument, OutOfRange
	ErrNotFound           = errdefs.ErrNotFound           // NotFound
	ErrAlreadyExists      = errdefs.ErrAlreadyExists      // AlreadyExists
	ErrFailedPrecondition = errdefs.ErrFailedPrecondition // FailedPrecondition: busy, shrink
	ErrNoSpace            = errdefs.ErrNoSpace            // ResourceExhausted: the pool is full
	ErrUnauthenticated    = errdefs.ErrUnauthenticated    // Unauthenticated: no valid token
	ErrPermissionDenied   = errdefs.ErrPermissionDenied   // PermissionDenied
	ErrUnavailable        = errdefs.ErrUnavailable        // Unavailable, or the API cannot be reached
)
