package orch

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/domain"
	"github.com/latchkey/latchkey/libs/errs"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/services/scheduler/internal/store"
)

// HandleResult applies a runner's task result to its Run.
func (o *Orchestrator) HandleResult(ctx context.Context, res *runnerv1.TaskResult) error {
	rec, _, err := o.Store.Get(ctx, res.GetProjectId(), res.GetRunId())
	if errors.Is(err, store.ErrNotFound) {
		return errStale
	}
	if err != nil {
		return err
	}
	if rec.GetTaskId() != res.GetTaskId() || domain.RunEnded(rec.GetRun().GetState()) {
		return errStale
	}
	if rec.GetStage() == schedulerv1.Stage_STAGE_PLATFORM_RETRY {
		return o.resumePlatformRetry(ctx, rec) // platform.go
	}
	if rec, err = o.countRedeliveries(ctx, rec, res); err != nil {
		return err
	}
	if res.GetPlatformFault() {
		var handled bool
		if handled, res, err = o.platformFault(ctx, rec, res); handled {
			return err
		}
	}
	switch rec.GetRun().GetKind() {
	case latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE, latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE:
		if rec.GetStage() == schedulerv1.Stage_STAGE_BACKING_OFF {
			return o.resumeBackoff(ctx, rec)
		}
		if rec.GetStage() == schedulerv1.Stage_STAGE_VERIFYING {
			return o.verifyResult(ctx, rec, res)
		}
		return o.createResult(ctx, rec, res)
	case latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_RECORD:
		return o.recordResult(ctx, rec, res) // record.go
	case latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_VALIDATE:
		return o.validateResult(ctx, rec, res)
	default:
		return o.apiResult(ctx, rec, res)
	}
}

func (o *Orchestrator) apiResult(ctx context.Context, rec *schedulerv1.RunRecord, res *runnerv1.TaskResult) error {
	if res.GetStatus() == runnerv1.TaskStatus_TASK_STATUS_SUCCEEDED {
		return o.apiSucceeded(ctx, rec, res)
	}
	run := rec.GetRun()
	project, id := run.GetProjectId(), run.GetId()
	o.finishChild(ctx, project, rec.GetChildRunId(), res.GetCheckOutcome(), res.GetFailureMessage())
	switch res.GetStatus() {
	case runnerv1.TaskStatus_TASK_STATUS_NEEDS_AUTH:
		return o.needsAuth(ctx, rec, res.GetBaseStateRevision())
	case runnerv1.TaskStatus_TASK_STATUS_INCONCLUSIVE:
		attempts := run.GetOptions().GetCheckAttempts()
		if attempts < 1 {
			attempts = 1
		}
		if rec.GetCheckAttempts()+1 < attempts {
			// Another check of the same attempt; it is counted with the dispatch, in one
			// compare-and-swap, so a second copy of this result counts nothing.
			return o.dispatchAPI(ctx, project, id, schedulerv1.Stage_STAGE_DISPATCHED, res.GetTaskId(), recheck)
		}
		return o.finish(ctx, project, id, latchkeyv1.RunState_RUN_STATE_FAILED, latchkeyv1.FailureReason_FAILURE_REASON_TRANSIENT,
			fmt.Sprintf("the check could not tell whether the session is logged in after %d attempt(s): %s", attempts, res.GetFailureMessage()), nil)
	case runnerv1.TaskStatus_TASK_STATUS_CANCELED:
		return o.finish(ctx, project, id, latchkeyv1.RunState_RUN_STATE_CANCELED, latchkeyv1.FailureReason_FAILURE_REASON_CANCELED_BY_USER, "canceled", nil)
	case runnerv1.TaskStatus_TASK_STATUS_REQUESTED_MORE_INFO:
		return o.askCaller(ctx, rec, res)
	default: // FAILED
		reason := res.GetFailureReason()
		if retriable(reason) && run.GetAttempt() <= run.GetOptions().GetRetries() {
			return o.dispatchAPI(ctx, project, id, schedulerv1.Stage_STAGE_DISPATCHED, res.GetTaskId(), nextAttempt)
		}
		return o.finish(ctx, project, id, latchkeyv1.RunState_RUN_STATE_FAILED, reason, res.GetFailureMessage(), nil)
	}
}

// apiSucceeded ends a Run whose check and API passed. Its validate child and the Run
// are stored ended at once (two keys: one KV round trip of waiting, not two, on every
// warm Run) and announced child first, so whoever sees the Run end finds its check
// ended too.
func (o *Orchestrator) apiSucceeded(ctx context.Context, rec *schedulerv1.RunRecord, res *runnerv1.TaskResult) error {
	run := rec.GetRun()
	o.writeBack(ctx, rec, res)
	var child *schedulerv1.RunRecord
	var wg sync.WaitGroup
	if id := rec.GetChildRunId(); id != "" {
		wg.Go(func() {
			child = o.endChild(ctx, run.GetProjectId(), id, res.GetCheckOutcome(), res.GetFailureMessage())
		})
	}
	ended, err := o.end(ctx, run.GetProjectId(), run.GetId(), latchkeyv1.RunState_RUN_STATE_SUCCEEDED, 0, "", res.GetOutput(), func(r *schedulerv1.RunRecord) {
		r.Run.BrowserTime = res.GetBrowserTime()
	})
	wg.Wait()
	if child != nil { // even when the Run's own write failed: its redelivery finds the child ended
		o.announce(ctx, child)
	}
	if err != nil || ended == nil {
		return err
	}
	o.announce(ctx, ended)
	return nil
}

// retriable reports whether an API failure may be retried automatically.
func retriable(r latchkeyv1.FailureReason) bool {
	return r == latchkeyv1.FailureReason_FAILURE_REASON_TRANSIENT || r == latchkeyv1.FailureReason_FAILURE_REASON_TIMEOUT
}

// neverRetried are the login failures that are never retried: retrying a wrong
// password locks accounts.
func neverRetried(r latchkeyv1.FailureReason) bool {
	switch r {
	case latchkeyv1.FailureReason_FAILURE_REASON_INVALID_CREDENTIALS, latchkeyv1.FailureReason_FAILURE_REASON_ACCOUNT_LOCKED,
		latchkeyv1.FailureReason_FAILURE_REASON_RATE_LIMITED, latchkeyv1.FailureReason_FAILURE_REASON_CAPTCHA_BLOCKED,
		latchkeyv1.FailureReason_FAILURE_REASON_MORE_INFO_REQUIRED, latchkeyv1.FailureReason_FAILURE_REASON_SCRIPT_ERROR:
		return true
	}
	return false
}

// askCaller parks a Run in REQUESTED_MORE_INFO; ResumeRun carries the answer to the runner.
func (o *Orchestrator) askCaller(ctx context.Context, rec *schedulerv1.RunRecord, res *runnerv1.TaskResult) error {
	updated, err := o.Store.Update(ctx, rec.GetRun().GetProjectId(), rec.GetRun().GetId(), func(r *schedulerv1.RunRecord) error {
		if r.GetTaskId() != res.GetTaskId() {
			return errStale
		}
		r.Run.State, r.Run.MoreInfo = latchkeyv1.RunState_RUN_STATE_REQUESTED_MORE_INFO, res.GetMoreInfo()
		// The same task goes on after the answer and sends its final result later.
		return nil
	})
	if err != nil {
		return err
	}
	o.emit(ctx, updated, "requested_more_info")
	return nil
}

// needsAuth handles a check that found the session logged out.
func (o *Orchestrator) needsAuth(ctx context.Context, rec *schedulerv1.RunRecord, invalidRev int64) error {
	run := rec.GetRun()
	project, id := run.GetProjectId(), run.GetId()
	sess, err := o.session(ctx, project, run.GetAuthSessionId())
	if err != nil {
		return err
	}
	cancel := func(msg string) error {
		return o.finish(ctx, project, id, latchkeyv1.RunState_RUN_STATE_CANCELED, latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED, msg, nil)
	}
	if sess.GetType() == latchkeyv1.SessionType_SESSION_TYPE_RECORDER {
		o.expireSession(ctx, sess, latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED, "the check failed and RECORDER sessions need a person to log in again", id)
		return cancel("validation failed; RECORDER sessions never log in again by themselves")
	}
	if o := run.GetOptions(); o != nil && o.AutoRecreate != nil && !o.GetAutoRecreate() {
		return cancel("validation failed and auto_recreate is off for this Run")
	}
	if _, err := o.Store.Update(ctx, project, id, func(r *schedulerv1.RunRecord) error {
		if r.GetTaskId() != rec.GetTaskId() {
			return errStale
		}
		r.InvalidRevision = invalidRev
		return nil
	}); err != nil {
		return err
	}
	rec.InvalidRevision = invalidRev
	return o.recreateOrWait(ctx, rec, sess)
}

// recreateOrWait makes sure exactly one login runs for the session, and makes this Run
// wait for it. A Run that found an older revision invalid than the session now has
// simply retries with the new state.
func (o *Orchestrator) recreateOrWait(ctx context.Context, rec *schedulerv1.RunRecord, sess *latchkeyv1.AuthSession) error {
	run := rec.GetRun()
	switch sess.GetState() {
	case latchkeyv1.SessionState_SESSION_STATE_EXPIRED:
		return o.finish(ctx, run.GetProjectId(), run.GetId(), latchkeyv1.RunState_RUN_STATE_CANCELED, latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED, "the AuthSession is expired: "+sess.GetStateMessage(), nil)
	case latchkeyv1.SessionState_SESSION_STATE_READY:
		if sess.GetStateRevision() > rec.GetInvalidRevision() {
			return o.dispatchAPI(ctx, run.GetProjectId(), run.GetId(), rec.GetStage(), rec.GetTaskId(), nextAttempt)
		}
	default:
		return o.wait(ctx, rec, rec.GetStage(), sess)
	}
	// READY with the revision that failed: become the one login, or wait for it.
	if sess.GetType() == latchkeyv1.SessionType_SESSION_TYPE_RUNTIME {
		if creds, _ := o.runtimeCredentials(ctx, rec); creds == nil {
			return o.finish(ctx, run.GetProjectId(), run.GetId(), latchkeyv1.RunState_RUN_STATE_CANCELED, latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED,
				"the session needs a new login and this RUNTIME session's Run carried no credentials", nil)
		}
	}
	createID := NewID("run")
	held, err := o.acquireLease(ctx, sess, createID)
	if err != nil {
		return err
	}
	if err := o.wait(ctx, rec, rec.GetStage(), sess); err != nil {
		if held {
			o.releaseLease(ctx, sess, createID)
		}
		return err
	}
	if !held {
		return nil
	}
	return o.startRecreate(ctx, rec, sess, createID)
}

// WakeSession re-dispatches (or cancels, when the session expired) every Run waiting
// for the session's login.
func (o *Orchestrator) WakeSession(ctx context.Context, project, session string) error {
	runs, err := o.Store.TakeWaiters(ctx, project, session)
	if err != nil {
		return err
	}
	for _, id := range runs {
		if err := o.dispatchAPI(ctx, project, id, schedulerv1.Stage_STAGE_WAITING_SESSION, "", nextAttempt); err != nil && !ErrStale(err) {
			o.Log.WarnContext(ctx, "waking run failed", "run_id", id, "error", err)
		}
	}
	return nil
}

// HandleSessionEvent wakes the Runs waiting on a session whose login ended: the
// events of a move to READY or EXPIRED. A state written back by a Run (READY to READY)
// wakes nobody — a Run only waits while a login runs — so the many write-backs cost no
// listing of waiters.
func (o *Orchestrator) HandleSessionEvent(ctx context.Context, ev *eventsv1.SessionEvent) error {
	switch ev.GetType() {
	case eventsv1.SessionEventType_SESSION_EVENT_TYPE_READY, eventsv1.SessionEventType_SESSION_EVENT_TYPE_RECREATED,
		eventsv1.SessionEventType_SESSION_EVENT_TYPE_EXPIRED, eventsv1.SessionEventType_SESSION_EVENT_TYPE_DELETED:
		return o.WakeSession(ctx, ev.GetProjectId(), ev.GetAuthSessionId())
	case eventsv1.SessionEventType_SESSION_EVENT_TYPE_UPDATED:
		// Its refresh settings may have changed: the next round finds out when it is due.
		o.refreshDue(timestamppb.New(o.now()))
	}
	return nil
}

// expireSession marks a session EXPIRED with reason, re-reading it on conflict.
func (o *Orchestrator) expireSession(ctx context.Context, sess *latchkeyv1.AuthSession, reason latchkeyv1.FailureReason, msg, runID string, origins ...string) {
	for range 5 {
		_, err := o.Registry.TransitionSession(ctx, &registryv1.TransitionSessionRequest{
			ProjectId: sess.GetProjectId(), AuthSessionId: sess.GetId(), ExpectedEtag: sess.GetEtag(),
			ToState: latchkeyv1.SessionState_SESSION_STATE_EXPIRED, Reason: reason, Message: msg, RunId: runID,
			Origins: union(sess.GetOrigins(), origins),
		})
		if err == nil {
			return
		}
		fresh, gerr := o.session(ctx, sess.GetProjectId(), sess.GetId())
		if gerr != nil || fresh.GetState() == latchkeyv1.SessionState_SESSION_STATE_EXPIRED {
			return
		}
		sess = fresh
	}
	o.Log.WarnContext(ctx, "could not expire session", "auth_session_id", sess.GetId())
}

// writeBack stores the state an API task ended with (rotated cookies, refreshed
// tokens) as the session's next revision, with compare-and-swap on the revision the
// task started from. When another Run wrote first the newer revision is kept: the
// cookie-wise merge (libs/storagestate.Merge) needs the plaintext, which only the
// runner holds, and is not wired on this path yet (docs/scheduler.md).
func (o *Orchestrator) writeBack(ctx context.Context, rec *schedulerv1.RunRecord, res *runnerv1.TaskResult) {
	run := rec.GetRun()
	if len(res.GetCapturedStateCiphertext()) == 0 || run.GetAuthSessionId() == "" || res.GetBaseStateRevision() == 0 {
		return
	}
	_, err := o.Registry.PutStorageState(ctx, &registryv1.PutStorageStateRequest{
		ProjectId: run.GetProjectId(), AuthSessionId: run.GetAuthSessionId(),
		Ciphertext: res.GetCapturedStateCiphertext(), BaseRevision: res.GetBaseStateRevision(),
	})
	switch err = errs.FromStatus(err); {
	case err == nil:
	case errors.Is(err, errs.ErrStale):
		o.Log.DebugContext(ctx, "state write-back lost to a newer revision", "run_id", run.GetId(), "auth_session_id", run.GetAuthSessionId())
	default:
		o.Log.WarnContext(ctx, "state write-back failed", "run_id", run.GetId(), "error", err)
	}
}
