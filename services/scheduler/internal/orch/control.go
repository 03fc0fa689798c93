package orch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/domain"
	"github.com/latchkey/latchkey/libs/errs"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/services/scheduler/internal/store"
)

// Cancel cancels a Run (and the validate child of its current attempt); a running
// task is aborted through lk.cancel.<run>. A Run with no record is no error: there is
// nothing to cancel.
func (o *Orchestrator) Cancel(ctx context.Context, project, runID string) error {
	rec, _, err := o.Store.Get(ctx, project, runID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := o.finish(ctx, project, runID, latchkeyv1.RunState_RUN_STATE_CANCELED, latchkeyv1.FailureReason_FAILURE_REASON_CANCELED_BY_USER, "canceled by a user", nil); err != nil {
		return err
	}
	if child := rec.GetChildRunId(); child != "" {
		_ = o.finish(ctx, project, child, latchkeyv1.RunState_RUN_STATE_CANCELED, latchkeyv1.FailureReason_FAILURE_REASON_CANCELED_BY_USER, "its Run was canceled", nil)
	}
	return nil
}

// Resume seals a caller's answers, sends them to the runner holding the Run's browser
// context on lk.resume.<run>, and marks the Run RUNNING again.
func (o *Orchestrator) Resume(ctx context.Context, project, runID string, answers map[string]string) (*latchkeyv1.Run, error) {
	cur, err := o.Get(ctx, project, runID)
	if err != nil {
		return nil, err
	}
	notWaiting := func(run *latchkeyv1.Run) error {
		return errs.New(errs.ErrPrecondition, "run %q is %s, not waiting for more information",
			run.GetId(), strings.TrimPrefix(run.GetState().String(), "RUN_STATE_")).WithCause(ErrNotWaiting)
	}
	if cur.GetRun().GetState() != latchkeyv1.RunState_RUN_STATE_REQUESTED_MORE_INFO {
		return nil, notWaiting(cur.GetRun())
	}
	ask := cur.GetRun().GetMoreInfo()
	if ask.GetField() != "" && answers[ask.GetField()] == "" {
		return nil, invalid("answers must include %q (%s)", ask.GetField(), ask.GetPrompt())
	}
	if len(answers) == 0 {
		return nil, invalid("answers are empty")
	}
	plain, err := json.Marshal(answers)
	if err != nil {
		return nil, err
	}
	sealed, err := o.Vault.Encrypt(ctx, &vaultv1.EncryptRequest{
		Context: &vaultv1.CryptoContext{ProjectId: project, Kind: domain.KindResumeAnswers, Id: runID}, Plaintext: plain,
	})
	if err != nil {
		return nil, fmt.Errorf("sealing answers: %w", err)
	}
	rec, err := o.Store.Update(ctx, project, runID, func(r *schedulerv1.RunRecord) error {
		if r.GetRun().GetState() != latchkeyv1.RunState_RUN_STATE_REQUESTED_MORE_INFO {
			return notWaiting(r.GetRun())
		}
		r.Run.State, r.Run.MoreInfo = latchkeyv1.RunState_RUN_STATE_RUNNING, nil
		return nil
	})
	if err != nil {
		return nil, err
	}
	subj, err := bus.ResumeSubject(runID)
	if err != nil {
		return nil, err
	}
	b, err := proto.Marshal(&runnerv1.TaskResume{RunId: runID, AnswersCiphertext: sealed.GetCiphertext()})
	if err != nil {
		return nil, err
	}
	if err := o.NC.PublishMsg(bus.NewMsg(ctx, o.prop, subj, b, "")); err != nil {
		return nil, fmt.Errorf("sending answers: %w", err)
	}
	o.emit(ctx, rec, "resumed")
	return rec.GetRun(), nil
}

// Sweep re-drives Runs whose next message was lost: a scheduler that died between
// writing a record and publishing, a task whose runner never answered, a waiter whose
// wake-up was missed, a back-off whose redelivery never came, a Run past its deadline.
// Every step it takes is the same compare-and-swap a message would have taken.
func (o *Orchestrator) Sweep(ctx context.Context, stuckAfter time.Duration) error {
	now := o.now()
	return o.Store.AllActive(ctx, func(rec *schedulerv1.RunRecord) {
		run := rec.GetRun()
		project, id := run.GetProjectId(), run.GetId()
		idle := now.Sub(rec.GetUpdateTime().AsTime())
		rctx := o.runContext(ctx, rec)
		var err error
		switch {
		case rec.GetDeadline() != nil && now.After(rec.GetDeadline().AsTime()):
			err = o.timeOut(rctx, rec)
		case rec.GetStage() == schedulerv1.Stage_STAGE_PLATFORM_RETRY:
			// Due at not_before, stuck or not: a fault the sweep itself found (below)
			// has no redelivered result to resume it.
			err = o.resumePlatformRetry(rctx, rec)
		case idle < stuckAfter:
			return
		case run.GetKind() == latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_VALIDATE:
			// A validate child ends with its API Run's task; one whose Run moved on
			// without it (a scheduler died between making it and dispatching) is ended.
			if parent := run.GetParentRunId(); parent != "" {
				err = o.endOrphanCheck(rctx, rec)
			}
		case rec.GetStage() == schedulerv1.Stage_STAGE_UNSPECIFIED:
			err = o.Begin(rctx, rec)
		case rec.GetStage() == schedulerv1.Stage_STAGE_WAITING_SESSION:
			err = o.WakeSessionIfDone(rctx, rec)
		case rec.GetStage() == schedulerv1.Stage_STAGE_BACKING_OFF:
			err = o.dispatchCreate(rctx, project, id, schedulerv1.Stage_STAGE_BACKING_OFF)
		case run.GetState() == latchkeyv1.RunState_RUN_STATE_REQUESTED_MORE_INFO:
			return // the runner holds the context; the Run's deadline bounds it
		case recording(rec):
			return // a person is logging in; the recording's deadline bounds it (record.go)
		case idle > o.Policy.TaskTimeout+stuckAfter:
			// A live runner answers by the task's deadline, so the task was lost with a
			// runner: a platform fault, sent again like any other.
			err = o.HandleResult(rctx, &runnerv1.TaskResult{
				TaskId: rec.GetTaskId(), RunId: id, ProjectId: project, Status: runnerv1.TaskStatus_TASK_STATUS_FAILED,
				FailureReason: latchkeyv1.FailureReason_FAILURE_REASON_TIMEOUT, FailureMessage: "no runner answered the task in time",
				PlatformFault: true,
			})
		}
		if errors.As(err, new(*RetryAfter)) {
			return // a back-off: the next sweep (or a redelivered result) resumes the Run
		}
		if err != nil && !ErrStale(err) {
			o.Log.WarnContext(rctx, "sweep could not re-drive run", "run_id", id, "error", err)
		}
	})
}

// timeOut ends a Run past its deadline: FAILED TIMEOUT, and the check of its current
// attempt with it. A login Run that times out lets its session go (loginTimedOut), so
// nothing waits for a login that no longer runs.
func (o *Orchestrator) timeOut(ctx context.Context, rec *schedulerv1.RunRecord) error {
	run := rec.GetRun()
	project, id := run.GetProjectId(), run.GetId()
	if err := o.finish(ctx, project, id, latchkeyv1.RunState_RUN_STATE_FAILED, latchkeyv1.FailureReason_FAILURE_REASON_TIMEOUT, "the Run did not finish before its timeout", nil); err != nil {
		return err
	}
	if child := rec.GetChildRunId(); child != "" && run.GetKind() == latchkeyv1.RunKind_RUN_KIND_API {
		if err := o.finish(ctx, project, child, latchkeyv1.RunState_RUN_STATE_FAILED, latchkeyv1.FailureReason_FAILURE_REASON_TIMEOUT, "its Run reached its deadline", nil); err != nil && !errors.Is(err, store.ErrNotFound) {
			o.Log.WarnContext(ctx, "ending the check of a timed-out run failed", "run_id", child, "error", err)
		}
	}
	switch run.GetKind() {
	case latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE, latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE:
		return o.loginTimedOut(ctx, rec)
	}
	return nil
}

// WakeSessionIfDone wakes a waiting Run's session waiters when its login has ended.
func (o *Orchestrator) WakeSessionIfDone(ctx context.Context, rec *schedulerv1.RunRecord) error {
	run := rec.GetRun()
	sess, err := o.session(ctx, run.GetProjectId(), run.GetAuthSessionId())
	if err != nil {
		return err
	}
	switch sess.GetState() {
	case latchkeyv1.SessionState_SESSION_STATE_READY, latchkeyv1.SessionState_SESSION_STATE_EXPIRED:
		return o.WakeSession(ctx, run.GetProjectId(), run.GetAuthSessionId())
	}
	return nil
}

// endOrphanCheck ends a VALIDATE child whose API Run has ended or dispatched another
// check: nothing will ever report its outcome.
func (o *Orchestrator) endOrphanCheck(ctx context.Context, rec *schedulerv1.RunRecord) error {
	run := rec.GetRun()
	parent, _, err := o.Store.Get(ctx, run.GetProjectId(), run.GetParentRunId())
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err == nil && !domain.RunEnded(parent.GetRun().GetState()) && parent.GetChildRunId() == run.GetId() {
		return nil // its attempt is still out
	}
	return o.finish(ctx, run.GetProjectId(), run.GetId(), latchkeyv1.RunState_RUN_STATE_FAILED, latchkeyv1.FailureReason_FAILURE_REASON_TRANSIENT,
		"its Run went on without this check", nil)
}
