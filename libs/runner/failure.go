package runner

import (
	"context"
	"errors"
	"fmt"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// Failure is a typed failure of a task: why it failed (DESIGN.md section 3) and a
// message a user can act on. Handlers return one (see InvalidCredentials and Fail) to
// say what went wrong; the recipe interpreter returns one for every failed step. Its
// message never carries a credential or a state value.
type Failure struct {
	// Reason types the failure; INVALID_CREDENTIALS, ACCOUNT_LOCKED and RATE_LIMITED
	// are never retried automatically.
	Reason latchkeyv1.FailureReason
	// Message says what happened, for the Run record.
	Message string
	// Step names the recipe step that failed, if a recipe ran.
	Step *StepRef
	// Outcome is what a check answers when it fails this way.
	Outcome latchkeyv1.CheckOutcome
	// ArtifactID is the failure screenshot in LK_ARTIFACTS, if one was taken.
	ArtifactID string
	cause      error
}

// StepRef names a recipe step: never a value, which may be a credential.
type StepRef struct {
	File     string
	API      string
	Index    int
	Kind     string
	Selector string
}

func (f *Failure) Error() string {
	return fmt.Sprintf("%s: %s", reasonName(f.Reason), f.Message)
}

// Unwrap returns the underlying error, if any.
func (f *Failure) Unwrap() error { return f.cause }

// Fail returns a Failure with reason and a message. Handlers use it for the typed
// failures a site can cause: ACCOUNT_LOCKED, RATE_LIMITED, CAPTCHA_BLOCKED and so on.
func Fail(reason latchkeyv1.FailureReason, format string, args ...any) error {
	return &Failure{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// InvalidCredentials returns the failure a create handler reports when the site
// rejected the username or password. It is never retried automatically.
func InvalidCredentials(message string) error {
	return &Failure{Reason: latchkeyv1.FailureReason_FAILURE_REASON_INVALID_CREDENTIALS, Message: message}
}

// ErrLoggedOut is what a check handler returns when the state it was given is not
// logged in: the check answers INVALID, and the session is recreated.
var ErrLoggedOut = errors.New("not logged in")

// errCanceled is the cause of a task canceled on lk.cancel.<run>.
var errCanceled = errors.New("the run was canceled")

// errDeadline is the cause of a task that ran past its deadline.
var errDeadline = errors.New("the task ran past its deadline")

// infraError marks a failure of the runner's own infrastructure (a crashed browser, an
// unreachable vault or registry): the task is redelivered rather than answered.
type infraError struct{ err error }

func (e *infraError) Error() string { return e.err.Error() }
func (e *infraError) Unwrap() error { return e.err }

// infra wraps err as a failure of the runner's infrastructure.
func infra(format string, args ...any) error {
	return &infraError{err: fmt.Errorf(format, args...)}
}

// isInfra reports whether err is a failure of the runner's infrastructure.
func isInfra(err error) bool {
	var ie *infraError
	return errors.As(err, &ie)
}

// causeOf returns why ctx ended: errCanceled, errDeadline, or ctx.Err().
func causeOf(ctx context.Context) error {
	if c := context.Cause(ctx); c != nil {
		return c
	}
	return ctx.Err()
}

func reasonName(r latchkeyv1.FailureReason) string {
	const prefix = "FAILURE_REASON_"
	s := r.String()
	if len(s) > len(prefix) {
		return s[len(prefix):]
	}
	return s
}

// reasonByName maps a recipe's failAs or fail reason to its enum value.
func reasonByName(name string) latchkeyv1.FailureReason {
	if v, ok := latchkeyv1.FailureReason_value["FAILURE_REASON_"+name]; ok {
		return latchkeyv1.FailureReason(v)
	}
	return latchkeyv1.FailureReason_FAILURE_REASON_SCRIPT_ERROR
}

// Reasons handlers use most, for Fail.
const (
	ReasonScriptError   = latchkeyv1.FailureReason_FAILURE_REASON_SCRIPT_ERROR
	ReasonAccountLocked = latchkeyv1.FailureReason_FAILURE_REASON_ACCOUNT_LOCKED
	ReasonRateLimited   = latchkeyv1.FailureReason_FAILURE_REASON_RATE_LIMITED
	ReasonCaptcha       = latchkeyv1.FailureReason_FAILURE_REASON_CAPTCHA_BLOCKED
	ReasonTransient     = latchkeyv1.FailureReason_FAILURE_REASON_TRANSIENT
)
