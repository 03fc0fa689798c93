package api

import (
	"context"
	"errors"

	"github.com/latchkey/latchkey/libs/errs"
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

// rule maps a class of the vault's errors to a kind of libs/errs (and so to a gRPC
// code) and, when msg is empty, the error's own text (only for errors whose text we
// wrote and that carry no secret); class names it in spans and logs.
type rule struct {
	match func(error) bool
	kind  error
	msg   string
	class string
}

func is(target error) func(error) bool { return func(err error) bool { return errors.Is(err, target) } }

var rules = []rule{
	{func(err error) bool { var e *invalidError; return errors.As(err, &e) }, errs.ErrInvalid, "", "invalid_argument"},
	{is(envelope.ErrMalformed), errs.ErrInvalid, "ciphertext is not a Latchkey vault ciphertext: pass the bytes Encrypt returned, unchanged", "malformed"},
	{is(envelope.ErrUnsupportedFormat), errs.ErrInvalid, "", "unsupported_format"},
	{is(envelope.ErrUnauthentic), errs.ErrInvalid, unauthenticMsg, "unauthentic"},
	{is(keyring.ErrUnknownVersion), errs.ErrPrecondition, "", "unknown_version"},
	{is(keyring.ErrBelowMinimum), errs.ErrPrecondition, "", "below_minimum"},
	{is(keyring.ErrRootMissing), errs.ErrPrecondition, "", "root_missing"},
	{is(keyring.ErrInvalidMinimum), errs.ErrInvalid, "", "invalid_minimum"},
	{is(store.ErrNotFound), errs.ErrNotFound, "", "not_found"},
	{is(store.ErrExists), errs.ErrExists, "", "exists"},
	{is(store.ErrRevisionMismatch), errs.ErrPrecondition, "", "revision_mismatch"},
	{is(store.ErrNoMaterial), errs.ErrPrecondition, "", "no_key_material"},
	{is(errStale), errs.ErrPrecondition, "", "stale_secrets"},
	{is(audit.ErrBadPageToken), errs.ErrInvalid, "page_token is not one this API returned: start again without it", "bad_page_token"},
	{func(err error) bool { var e *auditError; return errors.As(err, &e) }, errs.ErrUnavailable, "the audit log (LK_AUDIT) is unavailable, so nothing was decrypted: retry later", "audit_unavailable"},
	{is(errNotReady), errs.ErrUnavailable, "the vault is starting: retry in a moment", "not_ready"},
	{is(context.Canceled), nil, "", "canceled"},
	{is(context.DeadlineExceeded), nil, "", "deadline_exceeded"},
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

// toStatus turns the vault's errors into libs/errs errors of their kind and maps them
// there, the one place every service's errors become gRPC statuses: unknown errors
// become a generic Internal and are logged in full.
func (s *Server) toStatus(ctx context.Context, method string, err error) error {
	if err == nil {
		return nil
	}
	if r, ok := match(err); ok && r.kind != nil {
		msg := r.msg
		if msg == "" {
			msg = err.Error()
		}
		if errors.Is(r.kind, errs.ErrUnavailable) {
			s.d.Logger.WarnContext(ctx, "vault request not served", "method", method, "error", err)
		} else {
			s.d.Logger.DebugContext(ctx, "vault request refused", "method", method, "reason", r.class)
		}
		err = errs.New(r.kind, "%s", msg).WithCause(err)
	}
	return errs.Status(ctx, s.d.Logger, "vault", method, err)
}
