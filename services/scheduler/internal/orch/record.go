package orch

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/domain"
	"github.com/latchkey/latchkey/libs/errs"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
)

// An AUTHSESSION_RECORD Run (DESIGN.md section 8) holds a live browser in a runner
// while a person logs in through the registry's recorder page. The runner answers its
// RECORD task with the captured state once the browser reaches the session's finish
// URL (or the person presses Finish); the state then goes through the same check in a
// fresh context as a create's (verify, verifyResult) before the session becomes READY.
// A recording that ends any other way ends the Run and leaves the session as it was:
// RECORDER sessions are never logged in by Latchkey itself.

// minRecording is the shortest recording a RECORD task is given, whatever the Run's
// deadline says.
const minRecording = 10 * time.Second

// recording reports whether rec is a RECORD Run whose browser a person is using: the
// sweep leaves it alone until its deadline, however long the person takes.
func recording(rec *schedulerv1.RunRecord) bool {
	return rec.GetRun().GetKind() == latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_RECORD && rec.GetStage() == schedulerv1.Stage_STAGE_DISPATCHED
}

// dispatchRecord publishes the RECORD task of a new AUTHSESSION_RECORD Run. The task
// ends one task timeout before the Run's deadline, which leaves the verification of a
// state captured at the last moment its time.
func (o *Orchestrator) dispatchRecord(ctx context.Context, rec *schedulerv1.RunRecord) error {
	run := rec.GetRun()
	project, runID := run.GetProjectId(), run.GetId()
	ctx = o.runContext(ctx, rec)
	sess, err := o.session(ctx, project, run.GetAuthSessionId())
	if errors.Is(err, errs.ErrNotFound) {
		return o.finish(ctx, project, runID, latchkeyv1.RunState_RUN_STATE_CANCELED, latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED, "the AuthSession was deleted", nil)
	}
	if err != nil {
		return err
	}
	if sess.GetType() != latchkeyv1.SessionType_SESSION_TYPE_RECORDER || sess.GetRecorder().GetStartUrl() == "" {
		return o.finish(ctx, project, runID, latchkeyv1.RunState_RUN_STATE_FAILED, latchkeyv1.FailureReason_FAILURE_REASON_SCRIPT_ERROR,
			"only RECORDER sessions with a recorder.start_url can be recorded", nil)
	}
	end := o.now().Add(o.Policy.TaskTimeout * 5)
	if d := rec.GetDeadline(); d != nil {
		end = d.AsTime().Add(-o.Policy.TaskTimeout)
	}
	if floor := o.now().Add(minRecording); end.Before(floor) {
		end = floor
	}
	taskID := NewID("task")
	updated, err := o.Store.Update(ctx, project, runID, func(r *schedulerv1.RunRecord) error {
		if r.GetStage() != schedulerv1.Stage_STAGE_UNSPECIFIED || domain.RunEnded(r.GetRun().GetState()) {
			return errStale
		}
		r.Stage, r.TaskId = schedulerv1.Stage_STAGE_DISPATCHED, taskID
		r.Run.Attempt = 1
		r.Run.State, r.Run.StartTime = latchkeyv1.RunState_RUN_STATE_RUNNING, timestamppb.Now()
		return nil
	})
	if err != nil {
		return err
	}
	o.emit(ctx, updated, "recording")
	ref := sessionRef(sess)
	ref.StateRevision = 0 // the person logs in from an empty browser state
	return o.publishTask(ctx, &runnerv1.RunnerTask{
		TaskId: taskID, RunId: runID, ProjectId: project, Kind: runnerv1.TaskKind_TASK_KIND_RECORD,
		Api: recipe.CheckAPI, Session: ref, FreshContext: true, Attempt: 1, BundleVersion: run.GetBundleVersion(),
		Site:     sess.GetSite(),
		Deadline: timestamppb.New(end),
		Record: &runnerv1.RecordSpec{
			RecordingId: runID, StartUrl: sess.GetRecorder().GetStartUrl(), FinishUrlPrefix: sess.GetRecorder().GetFinishUrlPrefix(),
		},
	})
}

// recordResult handles the result of a RECORD task, then of the check of its capture.
func (o *Orchestrator) recordResult(ctx context.Context, rec *schedulerv1.RunRecord, res *runnerv1.TaskResult) error {
	if rec.GetStage() == schedulerv1.Stage_STAGE_VERIFYING {
		if res.GetCheckOutcome() == latchkeyv1.CheckOutcome_CHECK_OUTCOME_VALID {
			return o.verifyResult(ctx, rec, res)
		}
		return o.recordFailed(ctx, rec, latchkeyv1.RunState_RUN_STATE_FAILED, latchkeyv1.FailureReason_FAILURE_REASON_TRANSIENT,
			"the recorded state did not pass check in a fresh browser context; record the login again")
	}
	switch res.GetStatus() {
	case runnerv1.TaskStatus_TASK_STATUS_SUCCEEDED:
		if len(res.GetCapturedStateCiphertext()) == 0 {
			return o.recordFailed(ctx, rec, latchkeyv1.RunState_RUN_STATE_FAILED, latchkeyv1.FailureReason_FAILURE_REASON_SCRIPT_ERROR,
				"the recording finished but captured no browser state")
		}
		return o.verify(ctx, rec, res)
	case runnerv1.TaskStatus_TASK_STATUS_CANCELED:
		return o.recordFailed(ctx, rec, latchkeyv1.RunState_RUN_STATE_CANCELED, latchkeyv1.FailureReason_FAILURE_REASON_CANCELED_BY_USER, "canceled")
	default:
		reason, msg := res.GetFailureReason(), res.GetFailureMessage()
		if reason == 0 {
			reason = latchkeyv1.FailureReason_FAILURE_REASON_TRANSIENT
		}
		if reason == latchkeyv1.FailureReason_FAILURE_REASON_TIMEOUT {
			msg = "nobody finished the login before the recorder URL expired"
		}
		return o.recordFailed(ctx, rec, latchkeyv1.RunState_RUN_STATE_FAILED, reason, msg)
	}
}

// recordFailed ends a recording that produced no accepted state. The session stays as
// it was (PENDING, READY or EXPIRED): a failed recording is no evidence about it.
func (o *Orchestrator) recordFailed(ctx context.Context, rec *schedulerv1.RunRecord, state latchkeyv1.RunState, reason latchkeyv1.FailureReason, msg string) error {
	run := rec.GetRun()
	o.Log.InfoContext(ctx, "recording ended without a session", "run_id", run.GetId(), "auth_session_id", run.GetAuthSessionId(), "reason", reason.String())
	return o.finish(ctx, run.GetProjectId(), run.GetId(), state, reason, msg, nil)
}
