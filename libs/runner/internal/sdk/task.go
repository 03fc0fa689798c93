// Package sdk defines the types a handler author and an embedder use, which the
// runner's engine shares: the task a handler runs (Handler, Task, Question,
// Credentials), how it fails (Failure, Fail, InvalidCredentials, ErrLoggedOut), the
// backends a runner reads and seals with (StateStore, StateWriter, BundleStore, Vault),
// and the step events latchkey try prints. The root package libs/runner re-exports
// them with type aliases, so each has one definition that users and every engine
// package see. It also holds the error classes the engine's packages pass to each
// other (Infra, ErrCanceled, ErrDeadline). It imports no other package of the runner.
package sdk

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	"github.com/latchkey/latchkey/libs/recipe"
)

// Handler is a Go automation registered with Runner.Handle. ctx is the task's chromedp
// context: run chromedp actions on it (chromedp.Do(ctx, chromedp.Navigate(...))). It
// ends when the task is canceled or runs past its deadline. The returned value is the
// Run's output, encoded as JSON. Return InvalidCredentials (create), ErrLoggedOut
// (check) or another Failure to say what went wrong.
type Handler func(ctx context.Context, t *Task) (any, error)

// Task is what a handler knows of the task it runs.
type Task struct {
	// ID, RunID and ProjectID identify the task.
	ID, RunID, ProjectID string
	// Kind is CHECK, CREATE or API.
	Kind runnerv1.TaskKind
	// API is the automation, for example "list-invoices" or "auth-sessions/create".
	API string
	// Params are the Run's parameters.
	Params map[string]any
	// Credentials are set for auth-sessions/create only.
	Credentials Credentials
	// SessionID is the AuthSession the task runs in; empty for sessionless APIs.
	SessionID string
	// Vars are the bundle's and the session's vars.
	Vars map[string]string
	// Attempt counts the attempts of the Run, from 1.
	Attempt int

	ask func(ctx context.Context, q Question) (string, error)
}

// SetAsk gives t the engine's way of asking the caller, which Task.Ask uses. It is
// not part of the root package's API: only the engine builds tasks.
func SetAsk(t *Task, ask func(ctx context.Context, q Question) (string, error)) { t.ask = ask }

// Question is what a create asks its caller for, with Task.Ask.
type Question struct {
	// Field names the answer, for example "sms_code".
	Field string
	// Prompt is shown to the person answering.
	Prompt string
	// Choices, if set, are the allowed answers.
	Choices []string
	// Wait bounds how long the browser context is held open for the answer; zero
	// means the runner's default.
	Wait time.Duration
}

// Ask stops the task to ask the caller for more information (an SMS code, a choice):
// the Run enters REQUESTED_MORE_INFO, the browser context stays open, and Ask returns
// the answer given with ResumeRun, or a MORE_INFO_REQUIRED failure when nobody answered
// in time.
func (t *Task) Ask(ctx context.Context, q Question) (string, error) {
	if t.ask == nil {
		return "", Fail(reasonMoreInfo, "this task cannot ask for more information")
	}
	return t.ask(ctx, q)
}

// Credentials are a create's credentials. They print and log as redacted.
type Credentials map[string]string

// String names the fields only.
func (c Credentials) String() string { return fmt.Sprintf("Credentials(%d fields, redacted)", len(c)) }

// Format prints Credentials as String does, whatever the verb.
func (c Credentials) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }

// LogValue redacts the values.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

// StepEvent reports one recipe step to an observer (latchkey try prints them).
type StepEvent struct {
	API   string
	Index int
	Kind  recipe.Kind
	Name  string
	// Selector is the step's selector as written (a template, never a value).
	Selector string
	// Status is "ok", "skipped" (its when did not hold), "ignored" (optional and
	// failed) or "failed".
	Status   string
	Duration time.Duration
	// Err is the step's failure, for "ignored" and "failed".
	Err error
	// Note says what the step found, when there is more to say than its status: a
	// request's answer and the rule that matched, whether a click navigated, the TOTP
	// time step used, where a retry went. It never holds a value.
	Note string
}
