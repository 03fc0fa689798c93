package engine

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"google.golang.org/protobuf/types/known/structpb"

	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// finish types err into the result and reports whether it was a failure of the
// platform rather than of the site or the recipe.
func (e *execution) finish(err error) (platformFault bool) {
	defer e.release(err)
	if e.bc != nil && len(e.res.GetOrigins()) == 0 && e.task.GetKind() == runnerv1.TaskKind_TASK_KIND_CREATE {
		// A login that failed before it captured anything still reports where it went:
		// the scheduler's per-origin login budget counts failed logins too.
		visited := e.bc.TakeVisited()
		slices.Sort(visited)
		e.res.Origins = visited
	}
	if err == nil {
		return false
	}
	var f *sdk.Failure
	switch {
	case errors.Is(err, sdk.ErrCanceled):
		e.res.Status, e.res.FailureReason, e.res.FailureMessage = statusCanceled, reasonCanceled, "the run was canceled"
		return false
	case sdk.IsInfra(err) || e.BrowserGone() || errors.Is(err, context.Canceled):
		// context.Canceled without sdk.ErrCanceled: the runner is stopping.
		e.res.Status, e.res.FailureReason = statusFailed, reasonTransient
		e.res.FailureMessage = "the runner's browser or a service it needs failed; the task will be sent again"
		e.r.log.WarnContext(e.base, "task failed in the runner's infrastructure", "task_id", e.task.GetTaskId(), "run_id", e.task.GetRunId(), "error", err)
		return true
	case errors.Is(err, sdk.ErrDeadline):
		e.res.Status, e.res.FailureReason, e.res.FailureMessage = statusFailed, reasonTimeout, "the task ran past its deadline"
	case errors.As(err, &f):
		e.res.Status, e.res.FailureReason, e.res.FailureMessage = statusFailed, f.Reason, f.Message
		e.res.FailedStep, e.res.ArtifactId = stepProto(f.Step), f.ArtifactID
	default:
		e.res.Status, e.res.FailureReason, e.res.FailureMessage = statusFailed, reasonInternal, "internal error in the runner"
		e.r.log.ErrorContext(e.base, "task failed", "task_id", e.task.GetTaskId(), "run_id", e.task.GetRunId(), "error", err)
	}
	return false
}

// release keeps the context warm for its session, or closes it.
func (e *execution) release(err error) {
	bc := e.bc
	if bc == nil {
		return
	}
	e.bc = nil
	keep := bc.Session() != "" && bc.Alive() && !e.discard && !errors.Is(err, sdk.ErrCanceled) && e.r.currentJar(bc.Session(), bc.Jar) &&
		e.res.CheckOutcome != outcomeInvalid && !(e.task.GetKind() == runnerv1.TaskKind_TASK_KIND_CREATE && err != nil) &&
		!(err != nil && (sdk.IsInfra(err) || errors.Is(err, sdk.ErrDeadline)))
	if keep {
		e.r.pool.Return(bc)
		e.r.warmSet.Put(bc)
		return
	}
	e.r.pool.CloseContext(bc)
}

// setOutput stores a program's output in the result as a JSON value.
func (e *execution) setOutput(out any) error {
	if out == nil {
		return nil
	}
	v, err := toValue(out)
	if err != nil {
		return sdk.Fail(reasonScript, "the output cannot be encoded as JSON: %v", err)
	}
	e.res.Output = v
	return nil
}

// toValue converts a program's output to a JSON value.
func toValue(out any) (*structpb.Value, error) {
	b, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return structpb.NewValue(v)
}

// toStruct converts params to a protobuf Struct.
func toStruct(m map[string]any) (*structpb.Struct, error) {
	if m == nil {
		return nil, nil
	}
	v, err := toValue(m)
	if err != nil {
		return nil, err
	}
	return v.GetStructValue(), nil
}
