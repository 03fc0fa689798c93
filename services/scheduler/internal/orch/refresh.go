package orch

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/domain"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
)

// refreshBatch bounds the sessions one refresh round validates.
const refreshBatch = 50

// MinRefreshSpacing is the least time between two refresh rounds of all the
// scheduler's replicas together (the round lease's TTL).
const MinRefreshSpacing = time.Second

// Refresh validates READY sessions whose proactive refresh is due, so Runs rarely meet
// an expired session, and returns when the next one falls due (zero: not known — no
// round ran, or no session will). At most one round runs per MinRefreshSpacing across
// replicas (a lease with that TTL); each session is claimed by moving its next refresh
// time forward with compare-and-swap before its check is sent, so no session is
// checked twice at once.
func (o *Orchestrator) Refresh(ctx context.Context) (time.Time, error) {
	if _, err := o.Leases.Create(ctx, "refresh.round", []byte("1"), jetstream.KeyTTL(MinRefreshSpacing)); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return time.Time{}, nil
		}
		return time.Time{}, err
	}
	resp, err := o.Registry.ListSessionsDueForRefresh(ctx, &registryv1.ListSessionsDueForRefreshRequest{Now: timestamppb.New(o.now()), Limit: refreshBatch})
	if err != nil {
		return time.Time{}, err
	}
	for _, sess := range resp.GetAuthSessions() {
		if err := o.refreshOne(ctx, sess); err != nil {
			o.Log.WarnContext(ctx, "refreshing session failed", "auth_session_id", sess.GetId(), "error", err)
		}
	}
	if next := resp.GetNextDueTime(); next != nil {
		return next.AsTime(), nil
	}
	return time.Time{}, nil
}

func (o *Orchestrator) refreshOne(ctx context.Context, sess *latchkeyv1.AuthSession) error {
	claim := o.now().Add(2*o.Policy.TaskTimeout + jitter(o.Policy.TaskTimeout))
	if _, err := o.Registry.TransitionSession(ctx, &registryv1.TransitionSessionRequest{
		ProjectId: sess.GetProjectId(), AuthSessionId: sess.GetId(), ExpectedEtag: sess.GetEtag(),
		ToState: latchkeyv1.SessionState_SESSION_STATE_READY, StateRevision: sess.GetStateRevision(),
		NextRefreshTime: timestamppb.New(claim), LastValidateTime: sess.GetLastValidateTime(),
	}); err != nil {
		return nil // changed meanwhile: somebody else is on it, or it is no longer READY
	}
	id, taskID := NewID("run"), NewID("task")
	now := timestamppb.New(o.now())
	rec := &schedulerv1.RunRecord{
		Stage: schedulerv1.Stage_STAGE_DISPATCHED, TaskId: taskID, TraceContext: o.traceContext(ctx),
		Deadline: timestamppb.New(o.now().Add(o.Policy.TaskTimeout)),
		Run: &latchkeyv1.Run{
			Id: id, ProjectId: sess.GetProjectId(), Kind: latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_VALIDATE,
			State: latchkeyv1.RunState_RUN_STATE_RUNNING, Api: recipe.CheckAPI, AuthSessionId: sess.GetId(),
			CreateTime: now, StartTime: now, Site: domain.Site(sess.GetSite()),
		},
	}
	if err := o.Store.Create(ctx, rec); err != nil {
		return err
	}
	o.emit(ctx, rec, "refreshing")
	return o.publishTask(ctx, &runnerv1.RunnerTask{
		TaskId: taskID, RunId: id, ProjectId: sess.GetProjectId(), Kind: runnerv1.TaskKind_TASK_KIND_CHECK,
		Api: recipe.CheckAPI, Session: sessionRef(sess), Site: sess.GetSite(),
	})
}

// validateResult handles the check of a proactive refresh.
func (o *Orchestrator) validateResult(ctx context.Context, rec *schedulerv1.RunRecord, res *runnerv1.TaskResult) error {
	run := rec.GetRun()
	project, id := run.GetProjectId(), run.GetId()
	switch res.GetCheckOutcome() {
	case latchkeyv1.CheckOutcome_CHECK_OUTCOME_VALID:
		if err := o.finish(ctx, project, id, latchkeyv1.RunState_RUN_STATE_SUCCEEDED, 0, "", nil); err != nil {
			return err
		}
		o.writeBack(ctx, rec, res)
		sess, err := o.session(ctx, project, run.GetAuthSessionId())
		if err != nil {
			return err
		}
		next := o.nextRefresh(sess, res.GetEarliestCookieExpiry())
		_, err = o.Registry.TransitionSession(ctx, &registryv1.TransitionSessionRequest{
			ProjectId: project, AuthSessionId: sess.GetId(), ExpectedEtag: sess.GetEtag(),
			ToState: latchkeyv1.SessionState_SESSION_STATE_READY, StateRevision: sess.GetStateRevision(),
			LastValidateTime: timestamppb.New(o.now()), NextRefreshTime: next, RunId: id,
		})
		if err == nil {
			o.refreshDue(next)
		}
		return err // a conflict only means somebody changed the session; the next round sees it
	case latchkeyv1.CheckOutcome_CHECK_OUTCOME_INVALID:
		if err := o.finish(ctx, project, id, latchkeyv1.RunState_RUN_STATE_FAILED, latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED, "proactive refresh found the session logged out", nil); err != nil {
			return err
		}
		sess, err := o.session(ctx, project, run.GetAuthSessionId())
		if err != nil || sess.GetState() != latchkeyv1.SessionState_SESSION_STATE_READY || sess.GetStateRevision() > res.GetBaseStateRevision() {
			return err
		}
		switch sess.GetType() {
		case latchkeyv1.SessionType_SESSION_TYPE_RECORDER:
			o.expireSession(ctx, sess, latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED, "the check failed and RECORDER sessions need a person to log in again", id)
			return nil
		case latchkeyv1.SessionType_SESSION_TYPE_RUNTIME:
			return nil // no credentials to log in with: the next Run that brings some does
		}
		createID := NewID("run")
		held, err := o.acquireLease(ctx, sess, createID)
		if err != nil || !held {
			return err
		}
		return o.startRecreate(ctx, rec, sess, createID)
	default:
		return o.finish(ctx, project, id, latchkeyv1.RunState_RUN_STATE_FAILED, latchkeyv1.FailureReason_FAILURE_REASON_TRANSIENT,
			"proactive refresh could not tell whether the session is logged in: "+res.GetFailureMessage(), nil)
	}
}

// nextRefresh is when a session that just passed its check is validated again: at
// about 75% of the shortest auth-cookie lifetime or after its keep-alive interval,
// whichever comes first, with ±10% jitter so sessions don't refresh in lockstep. Nil
// means "only on the keep-alive, if any" (the registry's default).
func (o *Orchestrator) nextRefresh(sess *latchkeyv1.AuthSession, earliest *timestamppb.Timestamp) *timestamppb.Timestamp {
	if sess.GetRefresh().GetDisabled() {
		return nil
	}
	now := o.now()
	var in time.Duration
	if ka := sess.GetRefresh().GetKeepAliveInterval().AsDuration(); ka > 0 {
		in = ka
	}
	if earliest != nil {
		if life := earliest.AsTime().Sub(now); life > 0 && (in == 0 || life*3/4 < in) {
			in = life * 3 / 4
		}
	}
	if in <= 0 {
		return nil
	}
	return timestamppb.New(now.Add(in + jitter(in/10)))
}

// jitter is uniform in [-d, d].
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(2*d))) - d
}
