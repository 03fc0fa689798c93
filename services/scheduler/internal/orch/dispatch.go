package orch

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/domain"
	"github.com/latchkey/latchkey/libs/errs"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
)

// Begin starts driving a Run whose record was stored QUEUED (an API Run on a READY
// session is stored already dispatched by Start instead).
func (o *Orchestrator) Begin(ctx context.Context, rec *schedulerv1.RunRecord) error {
	run := rec.GetRun()
	switch run.GetKind() {
	case latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE, latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE:
		return o.dispatchCreate(ctx, run.GetProjectId(), run.GetId(), schedulerv1.Stage_STAGE_UNSPECIFIED)
	case latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_RECORD:
		return o.dispatchRecord(ctx, rec) // record.go
	}
	return o.dispatchAPI(ctx, run.GetProjectId(), run.GetId(), schedulerv1.Stage_STAGE_UNSPECIFIED, "", nextAttempt)
}

func (o *Orchestrator) session(ctx context.Context, project, id string) (*latchkeyv1.AuthSession, error) {
	resp, err := o.Registry.GetSession(ctx, &registryv1.GetSessionRequest{ProjectId: project, AuthSessionId: id})
	if err = errs.FromStatus(err); err != nil {
		return nil, fmt.Errorf("reading session %s: %w", id, err)
	}
	return resp.GetAuthSession(), nil
}

// step says what an API dispatch counts on the Run.
type step int

const (
	// nextAttempt is a new API attempt, counted against the Run's retries.
	nextAttempt step = iota
	// recheck checks again within the same attempt (an INCONCLUSIVE check).
	recheck
	// resend sends the same attempt again after a platform fault: it counts nothing
	// (the platform retry is counted where the fault is handled).
	resend
)

// dispatchAPI sends the next attempt of an API Run: a task that runs the check first
// in the session's context and the API right after when it passes. from is the stage
// the Run must still be in and task the task whose result the caller handles ("" when
// none is out), so that two replicas — or two copies of one result — never both
// dispatch; next says what the dispatch counts.
func (o *Orchestrator) dispatchAPI(ctx context.Context, project, runID string, from schedulerv1.Stage, task string, next step) error {
	rec, _, err := o.Store.Get(ctx, project, runID)
	if err != nil {
		return err
	}
	if rec.GetStage() != from || rec.GetTaskId() != task || domain.RunEnded(rec.GetRun().GetState()) {
		return errStale
	}
	ctx = o.runContext(ctx, rec)
	run := rec.GetRun()
	if run.GetAuthSessionId() == "" {
		return o.sendAPITask(ctx, rec, from, nil, next)
	}
	sess, err := o.session(ctx, project, run.GetAuthSessionId())
	if errors.Is(err, errs.ErrNotFound) {
		return o.finish(ctx, project, runID, latchkeyv1.RunState_RUN_STATE_CANCELED, latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED, "the AuthSession was deleted", nil)
	}
	if err != nil {
		return err
	}
	switch sess.GetState() {
	case latchkeyv1.SessionState_SESSION_STATE_READY:
		return o.sendAPITask(ctx, rec, from, sess, next)
	case latchkeyv1.SessionState_SESSION_STATE_EXPIRED:
		return o.finish(ctx, project, runID, latchkeyv1.RunState_RUN_STATE_CANCELED, latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED, "the AuthSession is expired: "+sess.GetStateMessage(), nil)
	default: // PENDING or RECREATING: a login is running.
		return o.wait(ctx, rec, from, sess)
	}
}

// sendAPITask records the attempt (and its validate child Run) and publishes the task.
func (o *Orchestrator) sendAPITask(ctx context.Context, rec *schedulerv1.RunRecord, from schedulerv1.Stage, sess *latchkeyv1.AuthSession, next step) error {
	run := rec.GetRun()
	task, err := o.prepareAPITask(ctx, rec, sess, next)
	if err != nil {
		return err
	}
	updated, err := o.Store.Update(ctx, run.GetProjectId(), run.GetId(), func(r *schedulerv1.RunRecord) error {
		// The stage and the task both: two copies of one result handled at once find
		// the Run DISPATCHED, but only the first finds the task they answer.
		if r.GetStage() != from || r.GetTaskId() != rec.GetTaskId() || domain.RunEnded(r.GetRun().GetState()) {
			return errStale
		}
		markDispatched(r, task, next)
		return nil
	})
	if err != nil {
		// Another copy of the message (a redelivery, the sweep) dispatched first: the
		// check child made for this dispatch will never run.
		o.finishChild(ctx, run.GetProjectId(), task.GetCheckRunId(), latchkeyv1.CheckOutcome_CHECK_OUTCOME_UNSPECIFIED, "superseded: another dispatch of the same attempt ran instead")
		return err
	}
	return o.publishAPITask(ctx, updated, task)
}

// prepareAPITask builds the task of an API attempt and, when it checks first, stores
// its validate child Run.
func (o *Orchestrator) prepareAPITask(ctx context.Context, rec *schedulerv1.RunRecord, sess *latchkeyv1.AuthSession, next step) (*runnerv1.RunnerTask, error) {
	run := rec.GetRun()
	taskID := NewID("task")
	attempt := max(run.GetAttempt(), 1) // the attempt a recheck or a resend belongs to
	if next == nextAttempt {
		attempt = run.GetAttempt() + 1
	}
	task := &runnerv1.RunnerTask{
		TaskId: taskID, RunId: run.GetId(), ProjectId: run.GetProjectId(), Kind: runnerv1.TaskKind_TASK_KIND_API,
		Api: run.GetApi(), Params: run.GetParams(), BundleVersion: run.GetBundleVersion(), Attempt: attempt,
		Site: run.GetSite(),
	}
	if sess == nil {
		return task, nil
	}
	task.Session = sessionRef(sess)
	if o.freshlyValidated(run, sess) {
		return task, nil
	}
	checkID := NewID("run")
	task.CheckFirst, task.CheckRunId = true, checkID
	now := timestamppb.Now()
	child := &schedulerv1.RunRecord{Stage: schedulerv1.Stage_STAGE_DISPATCHED, TaskId: taskID, TraceContext: rec.GetTraceContext(), Run: &latchkeyv1.Run{
		Id: checkID, ProjectId: run.GetProjectId(), Kind: latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_VALIDATE,
		State: latchkeyv1.RunState_RUN_STATE_RUNNING, Api: recipe.CheckAPI, AuthSessionId: run.GetAuthSessionId(),
		ParentRunId: run.GetId(), TraceId: run.GetTraceId(), CreateTime: now, StartTime: now,
		Site: run.GetSite(),
	}}
	if err := o.Store.Create(ctx, child); err != nil {
		return nil, err
	}
	return task, nil
}

// markDispatched records on r that task, an attempt counted as next says, is out.
func markDispatched(r *schedulerv1.RunRecord, task *runnerv1.RunnerTask, next step) {
	checkID := task.GetCheckRunId()
	r.Stage, r.TaskId, r.ChildRunId = schedulerv1.Stage_STAGE_DISPATCHED, task.GetTaskId(), checkID
	if checkID != "" {
		r.Run.ChildRunIds = append(r.Run.ChildRunIds, checkID)
	}
	switch next {
	case nextAttempt:
		r.Run.Attempt++
		r.CheckAttempts = 0
	case recheck:
		r.CheckAttempts++
	}
	r.NotBefore = nil
	if r.Run.State == latchkeyv1.RunState_RUN_STATE_QUEUED {
		r.Run.State, r.Run.StartTime = latchkeyv1.RunState_RUN_STATE_RUNNING, timestamppb.Now()
	}
}

// publishAPITask sends the task rec now records as dispatched.
func (o *Orchestrator) publishAPITask(ctx context.Context, rec *schedulerv1.RunRecord, task *runnerv1.RunnerTask) error {
	if rec.GetRuntimeCredentialsCached() {
		if creds, err := o.runtimeCredentials(ctx, rec); err == nil && creds != nil {
			task.Credentials = creds
		}
	}
	o.emit(ctx, rec, "running")
	return o.publishTask(ctx, task)
}

// freshlyValidated reports whether the Run may skip its check because the session
// passed one within the Run's validation_freshness window (off by default).
func (o *Orchestrator) freshlyValidated(run *latchkeyv1.Run, sess *latchkeyv1.AuthSession) bool {
	window := run.GetOptions().GetValidationFreshness().AsDuration()
	last := sess.GetLastValidateTime()
	return window > 0 && last != nil && o.now().Sub(last.AsTime()) < window
}

func sessionRef(sess *latchkeyv1.AuthSession) *runnerv1.SessionRef {
	return &runnerv1.SessionRef{AuthSessionId: sess.GetId(), Type: sess.GetType(), StateRevision: sess.GetStateRevision(), Proxy: sess.GetProxy(), Browser: sess.GetBrowser()}
}

// wait parks a Run until the session's login ends (the recreated or expired event).
// After registering it re-reads the session, so an event that fired in between is
// not missed.
func (o *Orchestrator) wait(ctx context.Context, rec *schedulerv1.RunRecord, from schedulerv1.Stage, sess *latchkeyv1.AuthSession) error {
	run := rec.GetRun()
	if _, err := o.Store.Update(ctx, run.GetProjectId(), run.GetId(), func(r *schedulerv1.RunRecord) error {
		if r.GetStage() != from || domain.RunEnded(r.GetRun().GetState()) {
			return errStale
		}
		r.Stage, r.TaskId = schedulerv1.Stage_STAGE_WAITING_SESSION, ""
		if r.Run.State == latchkeyv1.RunState_RUN_STATE_QUEUED {
			r.Run.State, r.Run.StartTime = latchkeyv1.RunState_RUN_STATE_RUNNING, timestamppb.Now()
		}
		return nil
	}); err != nil {
		return err
	}
	if err := o.Store.AddWaiter(ctx, run.GetProjectId(), run.GetAuthSessionId(), run.GetId()); err != nil {
		return err
	}
	o.emit(ctx, rec, "waiting_for_login")
	now, err := o.session(ctx, run.GetProjectId(), run.GetAuthSessionId())
	if err != nil {
		return nil // the event will wake it, or the sweep
	}
	expired := now.GetState() == latchkeyv1.SessionState_SESSION_STATE_EXPIRED
	renewed := now.GetState() == latchkeyv1.SessionState_SESSION_STATE_READY && now.GetStateRevision() > rec.GetInvalidRevision()
	if expired || renewed {
		return o.WakeSession(ctx, run.GetProjectId(), run.GetAuthSessionId())
	}
	return nil
}
