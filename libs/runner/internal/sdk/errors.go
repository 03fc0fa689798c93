package sdk

import (
	"context"
	"errors"
	"fmt"
)

// The errors below pass between the engine's packages and are not part of the root
// package's API.

// ErrCanceled is the cause of a task canceled on lk.cancel.<run>.
var ErrCanceled = errors.New("the run was canceled")

// ErrDeadline is the cause of a task that ran past its deadline.
var ErrDeadline = errors.New("the task ran past its deadline")

// infraError marks a failure of the runner's own infrastructure (a crashed browser, an
// unreachable vault or registry): the task is redelivered rather than answered.
type infraError struct{ err error }

func (e *infraError) Error() string { return e.err.Error() }
func (e *infraError) Unwrap() error { return e.err }

// Infra wraps an error as a failure of the runner's infrastructure.
func Infra(format string, args ...any) error {
	return &infraError{err: fmt.Errorf(format, args...)}
}

// IsInfra reports whether err is a failure of the runner's infrastructure.
func IsInfra(err error) bool {
	var ie *infraError
	return errors.As(err, &ie)
}

// CauseOf returns why ctx ended: ErrCanceled, ErrDeadline, or ctx.Err().
func CauseOf(ctx context.Context) error {
	if c := context.Cause(ctx); c != nil {
		return c
	}
	return ctx.Err()
}
