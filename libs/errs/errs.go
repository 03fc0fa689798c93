// Package errs is Latchkey's one error scheme, shared by every service. Domain code
// returns errors of a few kinds (ErrNotFound, ErrPrecondition, ...) built with New,
// whose message is written for the user; the gRPC layer maps them to a status in one
// place (Status, or the UnaryServerInterceptor); and a client of another Latchkey
// service gets the same kinds back (FromStatus, or the client interceptors), so no
// code below a service's API ever decodes a gRPC status:
//
//	if errors.Is(err, errs.ErrNotFound) { ... }          // the registry said NotFound
//	if errs.HasReason(err, "AUTH_SESSION_EXPIRED") { ... } // a typed FailedPrecondition
//
// Any other error is internal: the caller gets a generic Internal status and the full
// error is logged on the server's side.
package errs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// Kinds of errors a user can act on. Each maps to one gRPC code.
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

// Domain is the domain of the ErrorInfo details Latchkey attaches to typed errors.
const Domain = "latchkey.dev"

var kinds = []struct {
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

// Error is an error whose message is meant for the user. It never carries a secret.
type Error struct {
	kind   error
	msg    string
	reason string
	meta   map[string]string
	detail proto.Message
	cause  error
	// remote marks an error another service answered (FromStatus): its message was
	// written for that service's caller, not ours.
	remote bool
}

// New returns an Error of kind with a message formatted for the user.
func New(kind error, format string, args ...any) *Error {
	return &Error{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// WithReason attaches a machine-readable reason (an ErrorInfo detail in the Domain,
// e.g. "AUTH_SESSION_EXPIRED") that clients can branch on.
func (e *Error) WithReason(reason string, meta map[string]string) *Error {
	e.reason, e.meta = reason, meta
	return e
}

// WithDetail attaches a message returned in the gRPC status details (the current
// record, for a lost compare-and-swap).
func (e *Error) WithDetail(m proto.Message) *Error {
	e.detail = m
	return e
}

// WithCause keeps the error this one was made from, for errors.Is and errors.As; its
// text is not shown to the user.
func (e *Error) WithCause(err error) *Error {
	e.cause = err
	return e
}

// Error returns the user's message; for another service's answer, the status as
// gRPC prints it (with its code), as it read before it was mapped.
func (e *Error) Error() string {
	if e.remote && e.cause != nil {
		return e.cause.Error()
	}
	return e.msg
}

// Unwrap returns the kind and, when set, the cause.
func (e *Error) Unwrap() []error {
	if e.cause != nil {
		return []error{e.kind, e.cause}
	}
	return []error{e.kind}
}

// Kind returns the error's kind (ErrNotFound, ...).
func (e *Error) Kind() error { return e.kind }

// Reason returns the machine-readable reason, if any.
func (e *Error) Reason() string { return e.reason }

// Detail returns the message attached with WithDetail, if any.
func (e *Error) Detail() proto.Message { return e.detail }

// GRPCStatus is the status the error maps to, so an Error returned through any gRPC
// server keeps its code, message and details.
func (e *Error) GRPCStatus() *status.Status {
	code := codes.Unknown
	for _, k := range kinds {
		if errors.Is(e.kind, k.kind) {
			code = k.code
			break
		}
	}
	st := status.New(code, e.msg)
	var details []protoadapt.MessageV1
	if e.reason != "" {
		details = append(details, &errdetails.ErrorInfo{Reason: e.reason, Domain: Domain, Metadata: e.meta})
	}
	if e.detail != nil {
		details = append(details, protoadapt.MessageV1Of(e.detail))
	}
	if len(details) > 0 {
		if withD, err := st.WithDetails(details...); err == nil {
			st = withD
		}
	}
	return st
}

// HasReason reports whether err is (or wraps) an Error with reason.
func HasReason(err error, reason string) bool {
	var e *Error
	return errors.As(err, &e) && e.reason == reason
}

// IsUser reports whether err carries a message meant for this service's caller (an
// Error made with New), as opposed to an internal failure or another service's answer.
func IsUser(err error) bool {
	var e *Error
	return errors.As(err, &e) && !e.remote
}

// Status maps err to a gRPC status error for service's method. A user Error keeps its
// message, reason and detail; a cancelled or timed-out caller gets Canceled or
// DeadlineExceeded; another service's Unavailable stays Unavailable (the caller may
// retry); anything else — another service's refusal that this service did not turn
// into its own Error included — is logged in full and answered with a generic
// Internal that names the service.
func Status(ctx context.Context, log *slog.Logger, service, method string, err error) error {
	if err == nil {
		return nil
	}
	var ue *Error
	if errors.As(err, &ue) {
		if !ue.remote {
			return ue.GRPCStatus().Err()
		}
		if errors.Is(ue.kind, ErrUnavailable) {
			return status.Error(codes.Unavailable, "a Latchkey service is unavailable; try again")
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "the call was canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "the call ran out of time")
	case isTransient(err):
		if log != nil {
			log.WarnContext(ctx, "request not served: NATS JetStream is briefly unavailable", "method", method, "error", err)
		}
		return status.Errorf(codes.Unavailable, "the %s's storage is briefly unavailable; try again", service)
	}
	if log != nil {
		log.ErrorContext(ctx, "request failed", "method", method, "error", err)
	}
	return status.Errorf(codes.Internal, "internal error in the %s; it has been logged", service)
}

// transient tells a failure of the infrastructure that passes by itself; libs/bus
// sets it to recognise NATS JetStream's (bus.Transient), so this package, which Go
// clients import too, does not depend on NATS.
var transient atomic.Pointer[func(error) bool]

// SetTransient makes Status answer Unavailable, which callers retry, for the errors f
// reports as passing failures of the infrastructure rather than Internal.
func SetTransient(f func(error) bool) { transient.Store(&f) }

func isTransient(err error) bool {
	f := transient.Load()
	return f != nil && (*f)(err)
}

// FromStatus turns a gRPC status error from another Latchkey service into an Error of
// the matching kind, with the server's message and reason, so callers test it with
// errors.Is. Canceled and DeadlineExceeded become the context's errors; Internal,
// Unknown and errors that are no status are returned as they are (internal).
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	var ue *Error
	if errors.As(err, &ue) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Canceled:
		return &contextStatus{st: st, ctxErr: context.Canceled}
	case codes.DeadlineExceeded:
		return &contextStatus{st: st, ctxErr: context.DeadlineExceeded}
	}
	for _, k := range kinds {
		if k.code != st.Code() {
			continue
		}
		e := &Error{kind: k.kind, msg: st.Message(), cause: err, remote: true}
		for _, d := range st.Details() {
			switch d := d.(type) {
			case *errdetails.ErrorInfo:
				if d.GetDomain() == Domain {
					e.reason, e.meta = d.GetReason(), d.GetMetadata()
				}
			case protoadapt.MessageV1:
				if e.detail == nil {
					e.detail = protoadapt.MessageV2Of(d)
				}
			}
		}
		return e
	}
	return err
}

// contextStatus is a Canceled or DeadlineExceeded answer: errors.Is finds the context
// error, and it still reads as its status (status.Code).
type contextStatus struct {
	st     *status.Status
	ctxErr error
}

func (e *contextStatus) Error() string              { return e.st.Err().Error() }
func (e *contextStatus) Unwrap() error              { return e.ctxErr }
func (e *contextStatus) GRPCStatus() *status.Status { return e.st }

// UnaryServerInterceptor maps every handler's error with Status, naming the gRPC
// service in the generic Internal: handlers return domain errors and only this maps
// them. Errors that are already gRPC statuses pass through unchanged.
func UnaryServerInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		return resp, serverError(ctx, log, serviceOf(info.FullMethod)+" service", info.FullMethod, err)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streaming RPCs.
func StreamServerInterceptor(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return serverError(ss.Context(), log, serviceOf(info.FullMethod)+" service", info.FullMethod, handler(srv, ss))
	}
}

// serviceOf returns the service of a full method name: "/pkg.Service/Method" →
// "pkg.Service".
func serviceOf(method string) string {
	method = strings.TrimPrefix(method, "/")
	if i := strings.LastIndex(method, "/"); i >= 0 {
		return method[:i]
	}
	return method
}

func serverError(ctx context.Context, log *slog.Logger, service, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		var ue *Error
		if !errors.As(err, &ue) {
			return err // a status built by hand
		}
	}
	return Status(ctx, log, service, method, err)
}

// UnaryClientInterceptor applies FromStatus to every call's error.
func UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return FromStatus(invoker(ctx, method, req, reply, cc, opts...))
	}
}
