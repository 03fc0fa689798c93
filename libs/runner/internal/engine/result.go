package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/runner/internal/chrome"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
	"github.com/latchkey/latchkey/libs/storagestate"
)

// checkAnswered fills the result of a check that ran alone or answered other than
// VALID before an API.
func (e *execution) checkAnswered(tab context.Context, out any, cerr error) error {
	var f *sdk.Failure
	if errors.As(cerr, &f) {
		e.res.FailureMessage, e.res.FailedStep, e.res.ArtifactId = f.Message, stepProto(f.Step), f.ArtifactID
	} else if cerr != nil {
		e.res.FailureMessage = checkMessage(cerr)
	}
	switch e.res.CheckOutcome {
	case outcomeInvalid:
		e.res.Status = statusSucceeded
		if e.task.GetKind() == runnerv1.TaskKind_TASK_KIND_API {
			e.res.Status = statusNeedsAuth
		}
		return nil
	case outcomeInconclusive:
		e.res.Status = statusInconclusive
		return e.captureState(tab)
	}
	if err := e.setOutput(out); err != nil {
		return err
	}
	e.res.Status = statusSucceeded
	return e.captureState(tab)
}

// checkMessage explains a check that could not answer, without internals.
func checkMessage(err error) string {
	switch {
	case errors.Is(err, sdk.ErrDeadline):
		return "the check ran past the task's deadline"
	case errors.Is(err, sdk.ErrLoggedOut):
		return "the check says the state is not logged in"
	}
	return "the check could not tell: " + err.Error()
}

// finish types err into the result and reports whether the task should be
// redelivered instead of answered.
func (e *execution) finish(err error) (redeliver bool) {
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
		e.res.FailureMessage = "the runner's browser or a service it needs failed; the task may be retried"
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
	keep := bc.Session() != "" && bc.Alive() && !errors.Is(err, sdk.ErrCanceled) &&
		e.res.CheckOutcome != outcomeInvalid && !(e.task.GetKind() == runnerv1.TaskKind_TASK_KIND_CREATE && err != nil) &&
		!(err != nil && (sdk.IsInfra(err) || errors.Is(err, sdk.ErrDeadline)))
	if keep {
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

// captureState reads the context's state and, when it changed, seals it for the
// result.
func (e *execution) captureState(tab context.Context) error {
	bc := e.bc
	if bc == nil || bc.Session() == "" {
		return nil
	}
	ctx, span := e.r.tracer.Start(tab, "capture state")
	defer span.End()
	visited := bc.TakeVisited()
	slices.Sort(visited)
	e.res.Origins = visited
	st, err := bc.Capture(ctx, visited)
	if err != nil {
		span.SetStatus(codes.Error, "capture failed")
		return e.BrowserError(tab, fmt.Errorf("capturing state: %w", err))
	}
	if t := earliestExpiry(st); !t.IsZero() {
		e.res.EarliestCookieExpiry = timestamppb.New(t)
	}
	if chrome.SameState(st, e.state) {
		span.SetAttributes(attribute.Bool("latchkey.state_changed", false))
		return nil
	}
	span.SetAttributes(attribute.Bool("latchkey.state_changed", true))
	toStore := st
	if bc.Stored != nil && bc.Revision != 0 && e.res.GetBaseStateRevision() == bc.Revision {
		// The revision this task started from also holds another writer's cookies,
		// merged in when this context last wrote back: keep them.
		toStore = storagestate.Merge(e.state, bc.Stored, st)
	}
	plain, err := storagestate.Marshal(toStore)
	if err != nil {
		return sdk.Fail(reasonScript, "the captured state is not storable: %v", err)
	}
	if e.r.deps.Vault == nil {
		bc.State, bc.Revision, bc.Stored = st, 0, nil
		return nil
	}
	sealed, err := e.seal(ctx, plain)
	if err != nil {
		return err
	}
	if rev, final, stored, ok := e.writeBack(ctx, toStore, sealed); ok {
		// Stored by the runner itself; the context holds its own cookies, current for
		// it, even when the stored state merged in another writer's.
		span.SetAttributes(attribute.Int64("latchkey.state_revision", rev))
		bc.State, bc.Revision, bc.Digest, bc.Stored = st, rev, digestOf(final), divergent(stored, st)
		return nil
	}
	e.res.CapturedStateCiphertext = sealed
	bc.State, bc.Revision, bc.Digest, bc.Stored = st, 0, digestOf(sealed), divergent(toStore, st)
	return nil
}

// divergent returns stored when it differs from what the context holds, else nil.
func divergent(stored, held *latchkeyv1.StorageState) *latchkeyv1.StorageState {
	if stored == held || chrome.SameState(stored, held) { // the same value when nothing merged
		return nil
	}
	return stored
}

func (e *execution) seal(ctx context.Context, plain []byte) ([]byte, error) {
	return e.r.deps.Vault.Seal(ctx, sdk.Sealed{Project: e.task.GetProjectId(), Kind: storagestate.CryptoKind, ID: e.task.GetSession().GetAuthSessionId()}, plain)
}

// maxMergeRounds bounds write-back retries when other Runs keep writing.
const maxMergeRounds = 4

// writeBack stores the captured state as the session's next revision, with
// compare-and-swap on the revision the task started from. Only when another Run wrote
// meanwhile does it read that revision, merge cookie-wise (storagestate.Merge, from the
// state the task started from) and try again. It reports false when it did not store
// (no writer, a create or a candidate check, or trouble), and the scheduler stores the
// ciphertext from the result instead.
func (e *execution) writeBack(ctx context.Context, mine *latchkeyv1.StorageState, sealed []byte) (int64, []byte, *latchkeyv1.StorageState, bool) {
	t := e.task
	w, ok := e.r.deps.States.(sdk.StateWriter)
	base := e.res.GetBaseStateRevision()
	if !ok || t.GetKind() == runnerv1.TaskKind_TASK_KIND_CREATE || len(t.GetCandidateStateCiphertext()) > 0 || base == 0 {
		return 0, nil, nil, false
	}
	stored := mine
	project, session := t.GetProjectId(), t.GetSession().GetAuthSessionId()
	for range maxMergeRounds {
		rev, err := w.PutStorageState(ctx, project, session, sealed, base)
		if err == nil {
			e.res.BaseStateRevision = rev
			return rev, sealed, stored, true
		}
		if !errors.Is(err, sdk.ErrStateConflict) {
			e.r.log.WarnContext(ctx, "state write-back failed; the scheduler will store it", "task_id", t.GetTaskId(), "error", err)
			return 0, nil, nil, false
		}
		cipher, newest, err := e.r.deps.States.StorageState(ctx, project, session, 0)
		if err != nil {
			return 0, nil, nil, false
		}
		plain, err := e.r.deps.Vault.Open(ctx, sdk.Sealed{Project: project, Kind: storagestate.CryptoKind, ID: session}, cipher, t.GetRunId())
		if err != nil {
			return 0, nil, nil, false
		}
		current, err := storagestate.Unmarshal(plain)
		if err != nil {
			return 0, nil, nil, false
		}
		stored = storagestate.Merge(e.state, current, mine)
		merged, err := storagestate.Marshal(stored)
		if err != nil {
			return 0, nil, nil, false
		}
		if sealed, err = e.seal(ctx, merged); err != nil {
			return 0, nil, nil, false
		}
		base = newest
	}
	return 0, nil, nil, false
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
