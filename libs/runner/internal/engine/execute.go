package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"sync"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"

	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/chrome"
	"github.com/latchkey/latchkey/libs/runner/internal/interp"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// Short names of the enum values the runner uses most.
const (
	reasonScript      = latchkeyv1.FailureReason_FAILURE_REASON_SCRIPT_ERROR
	reasonTransient   = latchkeyv1.FailureReason_FAILURE_REASON_TRANSIENT
	reasonTimeout     = latchkeyv1.FailureReason_FAILURE_REASON_TIMEOUT
	reasonMoreInfo    = latchkeyv1.FailureReason_FAILURE_REASON_MORE_INFO_REQUIRED
	reasonRateLimited = latchkeyv1.FailureReason_FAILURE_REASON_RATE_LIMITED
	reasonInternal    = latchkeyv1.FailureReason_FAILURE_REASON_INTERNAL
	reasonCanceled    = latchkeyv1.FailureReason_FAILURE_REASON_CANCELED_BY_USER

	outcomeValid        = latchkeyv1.CheckOutcome_CHECK_OUTCOME_VALID
	outcomeInvalid      = latchkeyv1.CheckOutcome_CHECK_OUTCOME_INVALID
	outcomeInconclusive = latchkeyv1.CheckOutcome_CHECK_OUTCOME_INCONCLUSIVE

	statusSucceeded    = runnerv1.TaskStatus_TASK_STATUS_SUCCEEDED
	statusFailed       = runnerv1.TaskStatus_TASK_STATUS_FAILED
	statusNeedsAuth    = runnerv1.TaskStatus_TASK_STATUS_NEEDS_AUTH
	statusInconclusive = runnerv1.TaskStatus_TASK_STATUS_INCONCLUSIVE
	statusCanceled     = runnerv1.TaskStatus_TASK_STATUS_CANCELED
	statusMoreInfo     = runnerv1.TaskStatus_TASK_STATUS_REQUESTED_MORE_INFO
)

// execution is one task being run.
type execution struct {
	r        *Runner
	task     *runnerv1.RunnerTask
	res      *runnerv1.TaskResult
	base     context.Context // carries cancellation and the deadline
	cancel   context.CancelCauseFunc
	deadline *deadline
	bc       *chrome.Context
	warm     bool
	state    *latchkeyv1.StorageState // what the context held before the work
	creds    sdk.Credentials
	// interim publishes a result before the end (REQUESTED_MORE_INFO); nil when the
	// task runs without JetStream.
	interim  func(context.Context, *runnerv1.TaskResult) error
	observer func(sdk.StepEvent)
	askFn    func(ctx context.Context, q sdk.Question) (string, error)
	artifact func(id string, png []byte)
	asks     int
	// discard closes the context at the end instead of keeping it warm.
	discard bool
	mu      sync.Mutex
}

// Execute runs one task and returns its result, without JetStream: the task loop and
// tests use it. Failures of the runner's own infrastructure come back as FAILED with
// reason TRANSIENT and platform_fault set.
func (r *Runner) Execute(ctx context.Context, task *runnerv1.RunnerTask) *runnerv1.TaskResult {
	return r.execute(ctx, task, nil)
}

// execute runs task. A failure of Latchkey's own infrastructure (the browser, the
// vault, the registry) comes back with platform_fault set: the scheduler sends the
// task again, to this runner or another, without counting it against the Run.
func (r *Runner) execute(ctx context.Context, task *runnerv1.RunnerTask, interim func(context.Context, *runnerv1.TaskResult) error) *runnerv1.TaskResult {
	e := r.newExecution(ctx, task)
	e.interim = interim
	r.metrics.taskStarted(ctx)
	defer func() { r.metrics.taskEnded(ctx, task, e.res) }()
	defer e.cancel(nil)
	defer e.deadline.stop()
	r.track(e, true)
	defer r.track(e, false)
	err := e.run()
	e.res.PlatformFault = e.finish(err)
	return e.res
}

func (r *Runner) newExecution(ctx context.Context, task *runnerv1.RunnerTask) *execution {
	base, cancel := context.WithCancelCause(ctx)
	at := time.Now().Add(r.cfg.TaskTimeout)
	if d := task.GetDeadline(); d != nil {
		at = d.AsTime()
	}
	e := &execution{
		r: r, task: task, base: base, cancel: cancel,
		deadline: newDeadline(at, func() { cancel(sdk.ErrDeadline) }),
		res: &runnerv1.TaskResult{
			TaskId: task.GetTaskId(), RunId: task.GetRunId(), ProjectId: task.GetProjectId(),
			RunnerId: r.cfg.ID, BaseStateRevision: task.GetSession().GetStateRevision(),
		},
	}
	return e
}

// track registers e for cancellation by its Run (and its check's Run).
func (r *Runner) track(e *execution, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range []string{e.task.GetRunId(), e.task.GetCheckRunId()} {
		if id == "" {
			continue
		}
		if on {
			r.running[id] = e
		} else if r.running[id] == e {
			delete(r.running, id)
		}
	}
}

// cancelRun aborts the task of a Run, if this runner runs it.
func (r *Runner) cancelRun(runID string) bool {
	r.mu.Lock()
	e := r.running[runID]
	r.mu.Unlock()
	if e == nil {
		return false
	}
	e.cancel(sdk.ErrCanceled)
	return true
}

// run does the work of the task; its error is typed by finish.
func (e *execution) run() error {
	t := e.task
	kind := t.GetKind()
	switch kind {
	case runnerv1.TaskKind_TASK_KIND_CHECK, runnerv1.TaskKind_TASK_KIND_CREATE, runnerv1.TaskKind_TASK_KIND_API:
	case runnerv1.TaskKind_TASK_KIND_RECORD:
		return e.record() // record.go
	default:
		return sdk.Fail(reasonScript, "task %s has no kind", t.GetTaskId())
	}
	if kind == runnerv1.TaskKind_TASK_KIND_API && t.GetApi() == "" {
		return sdk.Fail(reasonScript, "task %s names no API", t.GetTaskId())
	}
	if kind != runnerv1.TaskKind_TASK_KIND_API && t.GetSession().GetAuthSessionId() == "" {
		return sdk.Fail(reasonScript, "a %s task needs an AuthSession", kindName(kind))
	}
	if err := e.base.Err(); err != nil {
		return sdk.CauseOf(e.base)
	}
	if e.r.knownStale(t) {
		// An earlier check found this revision logged out (stale.go): answer as that
		// check did, without a browser.
		e.res.CheckOutcome, e.res.Status = outcomeInvalid, statusSucceeded
		if kind == runnerv1.TaskKind_TASK_KIND_API {
			e.res.Status = statusNeedsAuth
		}
		e.res.FailureMessage = "an earlier check found this state revision logged out"
		return nil
	}
	var check, main *program
	var err error
	if kind == runnerv1.TaskKind_TASK_KIND_CHECK || t.GetCheckFirst() {
		if check, err = e.r.program(e.base, t, recipe.CheckAPI); err != nil {
			return err
		}
	}
	switch kind {
	case runnerv1.TaskKind_TASK_KIND_CREATE:
		if main, err = e.r.program(e.base, t, cmp.Or(t.GetApi(), recipe.CreateAPI)); err != nil {
			return err
		}
		if e.creds, err = e.r.credentials(e.base, t); err != nil {
			return err
		}
	case runnerv1.TaskKind_TASK_KIND_API:
		if main, err = e.r.program(e.base, t, t.GetApi()); err != nil {
			return err
		}
	}
	start := time.Now()
	defer func() { e.res.BrowserTime = durationpb.New(time.Since(start)) }()
	if err := e.acquire(); err != nil {
		return err
	}
	tab, stop := e.tabContext()
	defer stop()
	if err := e.prepareState(tab); err != nil {
		return err
	}
	if check != nil {
		out, cerr := e.runProgram(tab, check, interp.ModeCheck)
		e.res.CheckOutcome = checkOutcome(cerr)
		if e.res.CheckOutcome == outcomeInvalid {
			e.r.markStale(t)
		}
		if cerr != nil && (sdk.IsInfra(cerr) || errors.Is(cerr, sdk.ErrCanceled) || e.BrowserGone()) {
			return cerr
		}
		if e.res.CheckOutcome != outcomeValid || main == nil {
			return e.checkAnswered(tab, out, cerr)
		}
	}
	md := interp.ModeAPI
	if kind == runnerv1.TaskKind_TASK_KIND_CREATE {
		md = interp.ModeCreate
	}
	out, err := e.runProgram(tab, main, md)
	var f *sdk.Failure
	if errors.As(err, &f) && md == interp.ModeAPI && !e.BrowserGone() && tab.Err() == nil {
		// The site may have rotated cookies even though the API failed: hand the
		// state back so it is not lost.
		if cerr := e.captureState(tab); cerr != nil {
			e.r.log.WarnContext(e.base, "capturing state after a failed API", "task_id", e.task.GetTaskId(), "error", cerr)
		}
	}
	if err != nil {
		return err
	}
	if err := e.setOutput(out); err != nil {
		return err
	}
	e.res.Status = statusSucceeded
	if err := e.captureState(tab); err != nil {
		if md != interp.ModeAPI || !(sdk.IsInfra(err) || e.BrowserGone()) {
			return err
		}
		// The API has run: failing the task now would run it again. Its output
		// stands; the state it left is not stored, so the context is not kept either.
		e.r.log.WarnContext(e.base, "the API succeeded but its state could not be stored", "task_id", t.GetTaskId(), "run_id", t.GetRunId(), "error", err)
		e.discard = true
	}
	return nil
}

// Context is the task's browser context.
func (e *execution) Context() *chrome.Context { return e.bc }

// BrowserGone reports whether the task's browser exited.
func (e *execution) BrowserGone() bool {
	return e.bc != nil && e.bc.BrowserGone()
}

// tabContext returns a chromedp context of the task's tab that ends when the task
// does, with the same cause.
func (e *execution) tabContext() (context.Context, func()) {
	tab, cancel := context.WithCancelCause(e.bc.Tab())
	// Spans of the browser work belong to the task's trace.
	tab = trace.ContextWithSpan(tab, trace.SpanFromContext(e.base))
	stop := context.AfterFunc(e.base, func() { cancel(context.Cause(e.base)) })
	return tab, func() { stop(); cancel(nil) }
}

// runProgram runs a handler or a recipe in the task's tab, in a span named after the
// API.
func (e *execution) runProgram(tab context.Context, p *program, md interp.Mode) (out any, err error) {
	ctx, span := e.r.tracer.Start(tab, "api "+p.api)
	defer func() {
		if err != nil {
			span.SetStatus(codes.Error, "failed")
		}
		span.End()
	}()
	if p.handler != nil {
		return e.runHandler(ctx, p, md)
	}
	t := e.task
	rc := interp.Recipe{
		API: p.recipe, Mode: md, Params: t.GetParams().AsMap(), Vars: maps.Clone(p.vars),
		Session: recipe.SessionData{ID: t.GetSession().GetAuthSessionId(), ProjectID: t.GetProjectId()},
	}
	if md == interp.ModeCreate {
		rc.Credentials = e.creds
	}
	output, err := interp.Run(ctx, e, rc, interp.Options{StepTimeout: e.r.cfg.StepTimeout, Tracer: e.r.tracer, Log: e.r.log, Observer: e.observer})
	if err != nil {
		return nil, err
	}
	if len(output) == 0 {
		return nil, nil
	}
	return output, nil
}

// runHandler calls a Go handler, turning a panic into a SCRIPT_ERROR.
func (e *execution) runHandler(ctx context.Context, p *program, md interp.Mode) (out any, err error) {
	t := e.task
	params := map[string]any{}
	if t.GetParams() != nil {
		params = t.GetParams().AsMap()
	}
	task := &sdk.Task{
		ID: t.GetTaskId(), RunID: t.GetRunId(), ProjectID: t.GetProjectId(), Kind: t.GetKind(), API: p.api,
		Params: params, SessionID: t.GetSession().GetAuthSessionId(), Vars: p.vars, Attempt: int(t.GetAttempt()),
	}
	sdk.SetAsk(task, e.Ask)
	if md == interp.ModeCreate {
		task.Credentials = e.creds
	}
	defer func() {
		if v := recover(); v != nil {
			e.r.log.ErrorContext(ctx, "handler panicked", "api", p.api, "panic_type", fmt.Sprintf("%T", v), "stack", string(debug.Stack()))
			out, err = nil, sdk.Fail(reasonScript, "the handler of %s panicked", p.api)
		}
	}()
	out, err = p.handler(ctx, task)
	if err == nil {
		return out, nil
	}
	var f *sdk.Failure
	switch {
	case errors.As(err, &f), sdk.IsInfra(err):
		return nil, err
	case errors.Is(err, sdk.ErrLoggedOut):
		return nil, sdk.WithCause(&sdk.Failure{Reason: reasonScript, Message: "the check says the state is not logged in", Outcome: outcomeInvalid}, err)
	case ctx.Err() != nil:
		return nil, sdk.CauseOf(ctx)
	case e.BrowserGone():
		return nil, sdk.Infra("handler %s: %w", p.api, err)
	}
	return nil, sdk.WithCause(&sdk.Failure{Reason: reasonScript, Message: fmt.Sprintf("the handler of %s failed: %.512s", p.api, err.Error())}, err)
}

// browserError turns an error of a browser call into infrastructure trouble when the
// browser died, and into the task's cancellation or deadline when those ended it.
func (e *execution) BrowserError(tab context.Context, err error) error {
	switch {
	case e.BrowserGone():
		return sdk.Infra("%w", err)
	case tab.Err() != nil:
		return sdk.CauseOf(tab)
	}
	return err
}

func kindName(k runnerv1.TaskKind) string {
	switch k {
	case runnerv1.TaskKind_TASK_KIND_CHECK:
		return "check"
	case runnerv1.TaskKind_TASK_KIND_CREATE:
		return "create"
	case runnerv1.TaskKind_TASK_KIND_API:
		return "API"
	}
	return "record"
}

func stepProto(s *sdk.StepRef) *runnerv1.FailedStep {
	if s == nil {
		return nil
	}
	return &runnerv1.FailedStep{File: s.File, Api: s.API, Index: int32(s.Index), Kind: s.Kind, Selector: s.Selector}
}
