package orch

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/latchkey/latchkey/libs/errs"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// Errors of the orchestrator. Refusals a user can act on are libs/errs Errors (their
// kind says which gRPC code the API answers); these sentinels, found with errors.Is,
// say which rule refused.
var (
	// ErrSessionExpired: the Run's AuthSession is EXPIRED; a person must update its
	// credentials or record a login. Its errs.Error carries reason AUTH_SESSION_EXPIRED.
	ErrSessionExpired = errors.New("auth session expired")
	// ErrSessionNotFound: the Run names an AuthSession the project does not have.
	ErrSessionNotFound = errors.New("auth session not found")
	// ErrNoBundle: nothing is deployed in the project.
	ErrNoBundle = errors.New("no bundle deployed")
	// ErrAPINotFound: the deployed bundle has no such API.
	ErrAPINotFound = errors.New("api not found")
	// ErrRunNotFound: no Run has that id in the project.
	ErrRunNotFound = errors.New("run not found")
	// ErrNotWaiting: ResumeRun for a Run that asked nothing.
	ErrNotWaiting = errors.New("run is not waiting for more information")
)

// ReasonSessionExpired is the ErrorInfo reason of ErrSessionExpired refusals.
const ReasonSessionExpired = "AUTH_SESSION_EXPIRED"

// RetryAfter asks the consumer to redeliver the message after Delay (back-off between
// login attempts lives in JetStream, not in a sleeping goroutine).
type RetryAfter struct{ Delay time.Duration }

func (r *RetryAfter) Error() string { return fmt.Sprintf("retry after %s", r.Delay) }

// errStale marks a message for a Run that has moved on; it is acked and dropped.
var errStale = errors.New("stale message")

// ErrStale reports whether err means the message no longer matters.
func ErrStale(err error) bool { return errors.Is(err, errStale) }

// Refused reports whether Start refused a Run for good: a refusal the caller must fix
// (errs.IsUser), not a service that is briefly unavailable. The NATS intake drops such
// a request and Jobs record such a child as ended; anything else is tried again.
func Refused(err error) bool {
	return errs.IsUser(err) && !errors.Is(err, errs.ErrUnavailable)
}

func invalid(format string, args ...any) error { return errs.New(errs.ErrInvalid, format, args...) }

// sessionExpired refuses work on an EXPIRED session; before says what the user was
// about to do ("starting Runs").
func sessionExpired(sess *latchkeyv1.AuthSession, before string) error {
	return errs.New(errs.ErrPrecondition,
		"auth session %q is EXPIRED (%s): update its credentials or log in again through the recorder before %s",
		sess.GetId(), strings.TrimPrefix(sess.GetStateReason().String(), "FAILURE_REASON_"), before).
		WithReason(ReasonSessionExpired, map[string]string{"auth_session_id": sess.GetId()}).
		WithCause(ErrSessionExpired)
}

func sessionNotFound(id string) error {
	return errs.New(errs.ErrNotFound, "auth session %q not found in this project", id).WithCause(ErrSessionNotFound)
}

func runNotFound(id string) error {
	return errs.New(errs.ErrNotFound, "run %q not found in this project", id).WithCause(ErrRunNotFound)
}
