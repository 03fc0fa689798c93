package sdk

import (
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

// WithCause records cause as what f unwraps to, and returns f. Only the engine sets
// causes: a handler's Failure wraps nothing.
func WithCause(f *Failure, cause error) *Failure {
	f.cause = cause
	return f
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

func reasonName(r latchkeyv1.FailureReason) string {
	const prefix = "FAILURE_REASON_"
	s := r.String()
	if len(s) > len(prefix) {
		return s[len(prefix):]
	}
	return s
}

// ReasonByName maps a recipe's failAs or fail reason to its enum value.
func ReasonByName(name string) latchkeyv1.FailureReason {
	if v, ok := latchkeyv1.FailureReason_value["FAILURE_REASON_"+name]; ok {
		return latchkeyv1.FailureReason(v)
	}
	return latchkeyv1.FailureReason_FAILURE_REASON_SCRIPT_ERROR
}

const reasonMoreInfo = latchkeyv1.FailureReason_FAILURE_REASON_MORE_INFO_REQUIRED

// Reasons handlers use most, for Fail.
const (
	ReasonScriptError   = latchkeyv1.FailureReason_FAILURE_REASON_SCRIPT_ERROR
	ReasonAccountLocked = latchkeyv1.FailureReason_FAILURE_REASON_ACCOUNT_LOCKED
	ReasonRateLimited   = latchkeyv1.FailureReason_FAILURE_REASON_RATE_LIMITED
	ReasonCaptcha       = latchkeyv1.FailureReason_FAILURE_REASON_CAPTCHA_BLOCKED
	ReasonTransient     = latchkeyv1.FailureReason_FAILURE_REASON_TRANSIENT
)
