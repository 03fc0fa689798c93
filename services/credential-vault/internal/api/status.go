package api

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/latchkey/latchkey/services/credential-vault/internal/audit"
	"github.com/latchkey/latchkey/services/credential-vault/internal/envelope"
	"github.com/latchkey/latchkey/services/credential-vault/internal/keyring"
	"github.com/latchkey/latchkey/services/credential-vault/internal/store"
)

// auditError is an access that could not be put on record, so nothing was released.
type auditError struct{ err error }

func (e *auditError) Error() string { return "recording the audit event: " + e.err.Error() }
func (e *auditError) Unwrap() error { return e.err }

// unauthenticMsg is the one answer to an altered ciphertext and to one used with
// another context: callers cannot tell which it was.
const unauthenticMsg = "ciphertext does not decrypt for this context: it was sealed for another project, kind or id, or it was altered"

// rule maps a class of errors to a gRPC code and, when msg is empty, the error's own
// text (only for errors whose text we wrote and that carry no secret).
type rule struct {
	match func(error) bool
	code  codes.Code
	msg   string
	class string
}

func is(target error) func(error) bool { return func(err error) bool { return errors.Is(err, target) } }

var rules = []rule{
	{func(err error) bool { var e *invalidError; return errors.As(err, &e) }, codes.InvalidArgument, "", "invalid_argument"},
	{is(envelope.ErrMalformed), codes.InvalidArgument, "ciphertext is not a Latchkey vault ciphertext: pass the bytes Encrypt returned, unchanged", "malformed"},
	{is(envelope.ErrUnsupportedFormat), codes.InvalidArgument, "", "unsupported_format"},
	{is(envelope.ErrUnauthentic), codes.InvalidArgument, unauthenticMsg, "unauthentic"},
	{is(keyring.ErrUnknownVersion), codes.FailedPrecondition, "", "unknown_version"},
	{is(keyring.ErrBelowMinimum), codes.FailedPrecondition, "", "below_minimum"},
	{is(keyring.ErrRootMissing), codes.FailedPrecondition, "", "root_missing"},
	{is(keyring.ErrInvalidMinimum), codes.InvalidArgument, "", "invalid_minimum"},
	{is(store.ErrNotFound), codes.NotFound, "", "not_found"},
	{is(store.ErrExists), codes.AlreadyExists, "", "exists"},
	{is(store.ErrRevisionMismatch), codes.FailedPrecondition, "", "revision_mismatch"},
	{is(store.ErrNoMaterial), codes.FailedPrecondition, "", "no_key_material"},
	{is(errStale), codes.FailedPrecondition, "", "stale_secrets"},
	{is(audit.ErrBadPageToken), codes.InvalidArgument, "page_token is not one this API returned: start again without it", "bad_page_token"},
	{func(err error) bool { var e *auditError; return errors.As(err, &e) }, codes.Unavailable, "the audit log (LK_AUDIT) is unavailable, so nothing was decrypted: retry later", "audit_unavailable"},
	{is(errNotReady), codes.Unavailable, "the vault is starting: retry in a moment", "not_ready"},
	{is(context.Canceled), codes.Canceled, "request canceled", "canceled"},
	{is(context.DeadlineExceeded), codes.DeadlineExceeded, "deadline exceeded", "deadline_exceeded"},
}

func match(err error) (rule, bool) {
	for _, r := range rules {
		if r.match(err) {
			return r, true
		}
	}
	return rule{}, false
}

// errorClass names err's class for spans and logs, without its text.
func errorClass(err error) string {
	if r, ok := match(err); ok {
		return r.class
	}
	return "internal"
}

// toStatus is the one place errors become gRPC statuses. Unknown errors become a
// generic Internal and are logged in full here.
func (s *Server) toStatus(ctx context.Context, method string, err error) error {
	if err == nil {
		return nil
	}
	r, ok := match(err)
	if !ok {
		s.d.Logger.ErrorContext(ctx, "vault request failed", "method", method, "error", err)
		return status.Error(codes.Internal, "internal error in the vault; the vault log has the details")
	}
	msg := r.msg
	if msg == "" {
		msg = err.Error()
	}
	if r.code == codes.Unavailable {
		s.d.Logger.WarnContext(ctx, "vault request not served", "method", method, "error", err)
	} else {
		s.d.Logger.DebugContext(ctx, "vault request refused", "method", method, "code", r.code.String(), "reason", r.class)
	}
	return status.Error(r.code, msg)
}
