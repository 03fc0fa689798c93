// Package errs holds the registry's error kinds and the one place that maps them to
// gRPC status codes. An error built with New carries a message written for the user;
// any other error is internal: the client gets a generic Internal status and the full
// error is logged on our side.
package errs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// Kinds of errors a user can act on.
var (
	ErrInvalid         = errors.New("invalid argument")
	ErrNotFound        = errors.New("not found")
	ErrExists          = errors.New("already exists")
	ErrStale           = errors.New("stale revision")
	ErrPrecondition    = errors.New("failed precondition")
	ErrTooLarge        = errors.New("too large")
	ErrDenied          = errors.New("permission denied")
	ErrUnavailable     = errors.New("unavailable")
	ErrUnimplemented   = errors.New("unimplemented")
	ErrUnauthenticated = errors.New("unauthenticated")
)

// Error is an error whose message is meant for the user. It never carries a secret.
type Error struct {
	kind   error
	msg    string
	detail proto.Message
}

// New returns an Error of kind with a message formatted for the user.
func New(kind error, format string, args ...any) *Error {
	return &Error{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// WithDetail attaches a message returned in the gRPC status details (the current
// record, for a lost compare-and-swap).
func (e *Error) WithDetail(m proto.Message) *Error {
	e.detail = m
	return e
}

// Error returns the user's message.
func (e *Error) Error() string { return e.msg }

// Unwrap returns the kind.
func (e *Error) Unwrap() error { return e.kind }

var codeOf = []struct {
	kind error
	code codes.Code
}{
	{ErrInvalid, codes.InvalidArgument},
	{ErrNotFound, codes.NotFound},
	{ErrExists, codes.AlreadyExists},
	{ErrStale, codes.Aborted},
	{ErrPrecondition, codes.FailedPrecondition},
	{ErrTooLarge, codes.ResourceExhausted},
	{ErrDenied, codes.PermissionDenied},
	{ErrUnavailable, codes.Unavailable},
	{ErrUnimplemented, codes.Unimplemented},
	{ErrUnauthenticated, codes.Unauthenticated},
}

// Status maps err to a gRPC status error. A user Error keeps its message and detail;
// a cancelled or timed-out caller gets Canceled or DeadlineExceeded; anything else is
// logged in full and answered with a generic Internal.
func Status(ctx context.Context, log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	var ue *Error
	if errors.As(err, &ue) {
		for _, c := range codeOf {
			if errors.Is(ue.kind, c.kind) {
				st := status.New(c.code, ue.msg)
				if ue.detail != nil {
					if withD, derr := st.WithDetails(protoadapt.MessageV1Of(ue.detail)); derr == nil {
						st = withD
					}
				}
				return st.Err()
			}
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "the call was canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "the call ran out of time")
	}
	log.ErrorContext(ctx, "request failed", "method", method, "error", err)
	return status.Error(codes.Internal, "internal error in the session registry; it has been logged")
}

// Detail returns the message attached with WithDetail, if any.
func (e *Error) Detail() proto.Message { return e.detail }
