package runner

import (
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// Handler is a Go automation registered with Runner.Handle. ctx is the task's chromedp
// context: run chromedp actions on it. It ends when the task is canceled or runs past
// its deadline. The returned value is the Run's output, encoded as JSON. Return
// InvalidCredentials (create), ErrLoggedOut (check) or another Failure to say what
// went wrong.
type Handler = sdk.Handler

// Task is what a handler knows of the task it runs: ids, kind, API, params, the
// create's Credentials, the session and its vars, the attempt. Task.Ask asks the
// caller for more information (an SMS code, a choice) and waits for the answer.
type Task = sdk.Task

// Question is what a create asks its caller for, with Task.Ask.
type Question = sdk.Question

// Credentials are a create's credentials. They print and log as redacted.
type Credentials = sdk.Credentials

// Failure is a typed failure of a task: a reason (DESIGN.md section 3) and a message
// a user can act on, never a credential or a state value. Handlers return one (see
// InvalidCredentials and Fail); the recipe interpreter returns one for every failed
// step, naming it in Step.
type Failure = sdk.Failure

// StepRef names a recipe step: never a value, which may be a credential.
type StepRef = sdk.StepRef

// StepEvent reports one recipe step to LocalRun.Observer (latchkey try prints them).
type StepEvent = sdk.StepEvent

// Fail returns a Failure with reason and a message. Handlers use it for the typed
// failures a site can cause: ACCOUNT_LOCKED, RATE_LIMITED, CAPTCHA_BLOCKED and so on.
func Fail(reason latchkeyv1.FailureReason, format string, args ...any) error {
	return sdk.Fail(reason, format, args...)
}

// InvalidCredentials returns the failure a create handler reports when the site
// rejected the username or password. It is never retried automatically.
func InvalidCredentials(message string) error { return sdk.InvalidCredentials(message) }

// ErrLoggedOut is what a check handler returns when the state it was given is not
// logged in: the check answers INVALID, and the session is recreated.
var ErrLoggedOut = sdk.ErrLoggedOut

// Reasons handlers use most, for Fail.
const (
	ReasonScriptError   = sdk.ReasonScriptError
	ReasonAccountLocked = sdk.ReasonAccountLocked
	ReasonRateLimited   = sdk.ReasonRateLimited
	ReasonCaptcha       = sdk.ReasonCaptcha
	ReasonTransient     = sdk.ReasonTransient
)
