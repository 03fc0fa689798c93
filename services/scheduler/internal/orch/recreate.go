package orch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/domain"
	"github.com/latchkey/latchkey/libs/errs"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
)

func leaseKey(sess *latchkeyv1.AuthSession) string {
	return "recreate." + sess.GetProjectId() + "." + sess.GetId()
}

// acquireLease takes the session's single-flight recreate lease for createID. It
// reports false when another login holds it.
func (o *Orchestrator) acquireLease(ctx context.Context, sess *latchkeyv1.AuthSession, createID string) (bool, error) {
	_, err := o.Leases.Create(ctx, leaseKey(sess), []byte(createID), jetstream.KeyTTL(o.Policy.LeaseTTL))
	if err == nil {
		return true, nil
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	return false, fmt.Errorf("taking recreate lease: %w", err)
}

// releaseLease drops the lease if createID still holds it.
func (o *Orchestrator) releaseLease(ctx context.Context, sess *latchkeyv1.AuthSession, createID string) {
	e, err := o.Leases.Get(ctx, leaseKey(sess))
	if err != nil || string(e.Value()) != createID {
		return
	}
	_ = o.Leases.Delete(ctx, leaseKey(sess), jetstream.LastRevision(e.Revision()))
}

// startRecreate is run by the one Run that holds the lease: it moves the session to
// RECREATING and starts the create Run that logs in again.
func (o *Orchestrator) startRecreate(ctx context.Context, apiRec *schedulerv1.RunRecord, sess *latchkeyv1.AuthSession, createID string) error {
	api := apiRec.GetRun()
	if _, err := o.Registry.TransitionSession(ctx, &registryv1.TransitionSessionRequest{
		ProjectId: sess.GetProjectId(), AuthSessionId: sess.GetId(), ExpectedEtag: sess.GetEtag(),
		ToState: latchkeyv1.SessionState_SESSION_STATE_RECREATING, RunId: createID, Message: "logging in again",
	}); err != nil {
		// Somebody else changed the session first; its event wakes the waiters.
		o.releaseLease(ctx, sess, createID)
		o.Log.InfoContext(ctx, "session changed before recreate", "auth_session_id", sess.GetId(), "error", err)
		if fresh, gerr := o.session(ctx, sess.GetProjectId(), sess.GetId()); gerr == nil && fresh.GetState() != latchkeyv1.SessionState_SESSION_STATE_RECREATING {
			return o.WakeSession(ctx, sess.GetProjectId(), sess.GetId())
		}
		return nil
	}
	opts := &latchkeyv1.RunOptions{}
	if o := api.GetOptions(); o != nil {
		opts.CreateAttempts = o.CreateAttempts
	}
	create := &schedulerv1.RunRecord{TraceContext: apiRec.GetTraceContext(), Deadline: apiRec.GetDeadline(), Run: &latchkeyv1.Run{
		Id: createID, ProjectId: api.GetProjectId(), Kind: latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE,
		State: latchkeyv1.RunState_RUN_STATE_QUEUED, Api: recipe.CreateAPI, AuthSessionId: sess.GetId(),
		ParentRunId: api.GetId(), Options: opts, TraceId: api.GetTraceId(), CreateTime: timestamppb.Now(),
		Site: domain.Site(sess.GetSite()),
	}}
	if err := o.Store.Create(ctx, create); err != nil {
		return err
	}
	if _, err := o.Store.Update(ctx, api.GetProjectId(), api.GetId(), func(r *schedulerv1.RunRecord) error {
		r.Run.ChildRunIds = append(r.Run.ChildRunIds, createID)
		return nil
	}); err != nil {
		return err
	}
	o.emit(ctx, create, "queued")
	return o.dispatchCreate(ctx, api.GetProjectId(), createID, schedulerv1.Stage_STAGE_UNSPECIFIED)
}

// dispatchCreate sends the next login attempt of a create or update Run.
func (o *Orchestrator) dispatchCreate(ctx context.Context, project, runID string, from schedulerv1.Stage) error {
	rec, _, err := o.Store.Get(ctx, project, runID)
	if err != nil {
		return err
	}
	if rec.GetStage() != from || domain.RunEnded(rec.GetRun().GetState()) {
		return errStale
	}
	ctx = o.runContext(ctx, rec)
	run := rec.GetRun()
	sess, err := o.session(ctx, project, run.GetAuthSessionId())
	if errors.Is(err, errs.ErrNotFound) {
		return o.finish(ctx, project, runID, latchkeyv1.RunState_RUN_STATE_CANCELED, latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED, "the AuthSession was deleted", nil)
	}
	if err != nil {
		return err
	}
	creds, err := o.createCredentials(ctx, rec, sess)
	if err != nil {
		return o.createFailed(ctx, rec, latchkeyv1.FailureReason_FAILURE_REASON_INVALID_CREDENTIALS, err.Error())
	}
	if o.circuitOpen(ctx, sess) {
		return o.createFailed(ctx, rec, latchkeyv1.FailureReason_FAILURE_REASON_CIRCUIT_OPEN,
			fmt.Sprintf("repeated login failures opened this session's circuit; no login is tried for up to %s", o.Policy.CircuitWindow))
	}
	// A resend after a platform fault is the same attempt: its login was counted when
	// the attempt was first sent.
	resending := from == schedulerv1.Stage_STAGE_PLATFORM_RETRY
	if !resending {
		if reason, msg := o.spendBudget(ctx, sess, rec.GetOrigins()); reason != 0 {
			return o.createFailed(ctx, rec, reason, msg)
		}
	}
	taskID := NewID("task")
	updated, err := o.Store.Update(ctx, project, runID, func(r *schedulerv1.RunRecord) error {
		if r.GetStage() != from || domain.RunEnded(r.GetRun().GetState()) {
			return errStale
		}
		r.Stage, r.TaskId, r.NotBefore = schedulerv1.Stage_STAGE_DISPATCHED, taskID, nil
		if !resending {
			r.CreateAttempts++
		}
		r.Run.Attempt = r.CreateAttempts
		if r.Run.State == latchkeyv1.RunState_RUN_STATE_QUEUED {
			r.Run.State, r.Run.StartTime = latchkeyv1.RunState_RUN_STATE_RUNNING, timestamppb.Now()
		}
		return nil
	})
	if err != nil {
		return err
	}
	o.emit(ctx, updated, "logging_in")
	ref := sessionRef(sess)
	ref.StateRevision = 0 // a login starts from an empty browser state
	return o.publishTask(ctx, &runnerv1.RunnerTask{
		TaskId: taskID, RunId: runID, ProjectId: project, Kind: runnerv1.TaskKind_TASK_KIND_CREATE,
		Api: recipe.CreateAPI, Session: ref, Credentials: creds, FreshContext: true, Attempt: updated.GetCreateAttempts(),
		BundleVersion: run.GetBundleVersion(), Site: sess.GetSite(),
	})
}

// createCredentials says where a create finds its credentials.
func (o *Orchestrator) createCredentials(ctx context.Context, rec *schedulerv1.RunRecord, sess *latchkeyv1.AuthSession) (*runnerv1.CredentialsRef, error) {
	switch sess.GetType() {
	case latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS:
		secret := domain.CredentialsSecret(sess.GetId())
		if rec.GetRun().GetKind() == latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE {
			secret = domain.PendingCredentialsSecret(sess.GetId())
		}
		return &runnerv1.CredentialsRef{Source: &runnerv1.CredentialsRef_SecretId{SecretId: secret}}, nil
	case latchkeyv1.SessionType_SESSION_TYPE_RUNTIME:
		ref, err := o.runtimeCredentials(ctx, rec)
		if err != nil || ref == nil {
			return nil, errors.New("this RUNTIME session's credentials are no longer available (they are kept only for the Run that passed them); start a Run with credentials")
		}
		return ref, nil
	default:
		return nil, errors.New("RECORDER sessions log in only through the recorder")
	}
}

// spendBudget counts one login against the session's and its origins' budgets.
func (o *Orchestrator) spendBudget(ctx context.Context, sess *latchkeyv1.AuthSession, tried []string) (latchkeyv1.FailureReason, string) {
	p := o.Policy
	n, err := o.Cache.Incr(ctx, "budget.session."+sess.GetProjectId()+"."+sess.GetId(), p.BudgetWindow)
	if err == nil && p.SessionBudget > 0 && n > p.SessionBudget {
		return latchkeyv1.FailureReason_FAILURE_REASON_LOGIN_BUDGET_EXHAUSTED,
			fmt.Sprintf("more than %d logins for this session within %s; a person must check the login", p.SessionBudget, p.BudgetWindow)
	}
	for _, origin := range union(sess.GetOrigins(), tried) {
		if n := o.countOriginLogin(ctx, sess.GetProjectId(), origin); p.OriginBudget > 0 && n > p.OriginBudget {
			return latchkeyv1.FailureReason_FAILURE_REASON_LOGIN_BUDGET_EXHAUSTED,
				fmt.Sprintf("more than %d logins to %s within %s", p.OriginBudget, origin, p.BudgetWindow)
		}
	}
	return 0, ""
}

// countOriginLogin counts one login to origin within the project's budget window and
// returns the count so far (0 when the cache is unavailable: budgets fail open).
func (o *Orchestrator) countOriginLogin(ctx context.Context, project, origin string) int64 {
	sum := sha256.Sum256([]byte(origin))
	n, err := o.Cache.Incr(ctx, "budget.origin."+project+"."+hex.EncodeToString(sum[:12]), o.Policy.BudgetWindow)
	if err != nil {
		return 0
	}
	return n
}

// loginOrigins keeps the http(s) origins a login visited, at most maxOrigins of them,
// for the session's record.
func loginOrigins(visited []string) []string {
	const maxOrigins = 32
	out := make([]string, 0, len(visited))
	for _, v := range visited {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(v) > 255 {
			continue
		}
		if out = append(out, u.Scheme+"://"+u.Host); len(out) == maxOrigins {
			break
		}
	}
	return out
}

// union returns the origins of a and b, sorted, each once.
func union(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// countNewOrigins counts a login against the origins it visited that neither the
// session nor the Run's earlier attempts (tried) knew before it — spendBudget counted
// those — so a site's first logins from new sessions count towards its budget too.
func (o *Orchestrator) countNewOrigins(ctx context.Context, project, sessionID string, visited, tried []string) {
	if len(visited) == 0 {
		return
	}
	sess, err := o.session(ctx, project, sessionID)
	if err != nil {
		return
	}
	for _, origin := range loginOrigins(visited) {
		if !slices.Contains(sess.GetOrigins(), origin) && !slices.Contains(tried, origin) {
			o.countOriginLogin(ctx, project, origin)
		}
	}
}

// createResult handles the result of a login task.
func (o *Orchestrator) createResult(ctx context.Context, rec *schedulerv1.RunRecord, res *runnerv1.TaskResult) error {
	o.countNewOrigins(ctx, rec.GetRun().GetProjectId(), rec.GetRun().GetAuthSessionId(), res.GetOrigins(), rec.GetOrigins())
	// Failed attempts teach the origins too: the next attempt's budget check and the
	// expired session keep them.
	rec.Origins = union(rec.GetOrigins(), loginOrigins(res.GetOrigins()))
	switch res.GetStatus() {
	case runnerv1.TaskStatus_TASK_STATUS_SUCCEEDED:
		if len(res.GetCapturedStateCiphertext()) == 0 {
			return o.createFailed(ctx, rec, latchkeyv1.FailureReason_FAILURE_REASON_SCRIPT_ERROR, "the create finished but captured no browser state")
		}
		return o.verify(ctx, rec, res)
	case runnerv1.TaskStatus_TASK_STATUS_REQUESTED_MORE_INFO:
		return o.askCaller(ctx, rec, res)
	case runnerv1.TaskStatus_TASK_STATUS_CANCELED:
		return o.createFailed(ctx, rec, latchkeyv1.FailureReason_FAILURE_REASON_CANCELED_BY_USER, "canceled")
	default:
		reason := res.GetFailureReason()
		if reason == 0 {
			reason = latchkeyv1.FailureReason_FAILURE_REASON_TRANSIENT
		}
		return o.createFailed(ctx, rec, reason, res.GetFailureMessage())
	}
}

// verify checks a create's candidate state in a fresh browser context before it is
// accepted, so a session is never READY with a state that can't be restored.
func (o *Orchestrator) verify(ctx context.Context, rec *schedulerv1.RunRecord, res *runnerv1.TaskResult) error {
	return o.sendVerify(ctx, rec, rec.GetStage(), res.GetCapturedStateCiphertext(), res.GetOrigins())
}

// sendVerify records the candidate and publishes its check, when the Run is still in
// stage from with the task rec names. origins, when not nil, replace the record's.
func (o *Orchestrator) sendVerify(ctx context.Context, rec *schedulerv1.RunRecord, from schedulerv1.Stage, candidate []byte, origins []string) error {
	run := rec.GetRun()
	// The verification runs behind the session's proxy and with its browser identity,
	// as every later task of the session does (its context becomes the session's jar).
	sess, err := o.session(ctx, run.GetProjectId(), run.GetAuthSessionId())
	if errors.Is(err, errs.ErrNotFound) {
		return o.finish(ctx, run.GetProjectId(), run.GetId(), latchkeyv1.RunState_RUN_STATE_CANCELED, latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED, "the AuthSession was deleted", nil)
	}
	if err != nil {
		return err
	}
	taskID := NewID("task")
	updated, err := o.Store.Update(ctx, run.GetProjectId(), run.GetId(), func(r *schedulerv1.RunRecord) error {
		if r.GetTaskId() != rec.GetTaskId() || r.GetStage() != from || domain.RunEnded(r.GetRun().GetState()) {
			return errStale
		}
		r.Stage, r.TaskId, r.CandidateState, r.NotBefore = schedulerv1.Stage_STAGE_VERIFYING, taskID, candidate, nil
		if origins != nil {
			r.Origins = origins
		}
		return nil
	})
	if err != nil {
		return err
	}
	o.emit(ctx, updated, "verifying")
	return o.publishTask(ctx, &runnerv1.RunnerTask{
		TaskId: taskID, RunId: run.GetId(), ProjectId: run.GetProjectId(), Kind: runnerv1.TaskKind_TASK_KIND_CHECK,
		Api:          recipe.CheckAPI,
		Session:      &runnerv1.SessionRef{AuthSessionId: run.GetAuthSessionId(), Proxy: sess.GetProxy(), Browser: sess.GetBrowser()},
		FreshContext: true, CandidateStateCiphertext: candidate, BundleVersion: run.GetBundleVersion(),
		Site: sess.GetSite(),
	})
}

// verifyResult accepts the candidate when its check passed in the fresh context.
func (o *Orchestrator) verifyResult(ctx context.Context, rec *schedulerv1.RunRecord, res *runnerv1.TaskResult) error {
	if res.GetCheckOutcome() != latchkeyv1.CheckOutcome_CHECK_OUTCOME_VALID {
		return o.createFailed(ctx, rec, latchkeyv1.FailureReason_FAILURE_REASON_TRANSIENT, "the new state did not pass check in a fresh browser context")
	}
	run := rec.GetRun()
	project := run.GetProjectId()
	// The check ran with the candidate and the site may have rotated its cookies for
	// it: what the check's context ended with is the newest state, and the one the
	// runner's warm context holds. Storing the candidate would leave the session on a
	// cookie the site already replaced (and, once the site's grace ends, logged out).
	accepted := rec.GetCandidateState()
	if c := res.GetCapturedStateCiphertext(); len(c) > 0 {
		accepted = c
	}
	rev, err := o.storeCandidate(ctx, project, run.GetAuthSessionId(), accepted)
	if err != nil {
		return err
	}
	sess, err := o.markReady(ctx, project, run.GetAuthSessionId(), rev, run.GetId(), res.GetEarliestCookieExpiry(), loginOrigins(rec.GetOrigins()))
	if err != nil {
		return err
	}
	if run.GetKind() == latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE {
		o.completeUpdate(ctx, sess, run.GetId(), true)
	}
	if err := o.finish(ctx, project, run.GetId(), latchkeyv1.RunState_RUN_STATE_SUCCEEDED, 0, "", nil); err != nil {
		return err
	}
	o.releaseLease(ctx, sess, run.GetId())
	return o.WakeSession(ctx, project, sess.GetId())
}

// storeCandidate stores an accepted state as the session's newest revision. A fresh
// login replaces whatever write-back landed meanwhile.
func (o *Orchestrator) storeCandidate(ctx context.Context, project, sessionID string, sealed []byte) (int64, error) {
	for range 5 {
		s, err := o.session(ctx, project, sessionID)
		if err != nil {
			return 0, err
		}
		put, err := o.Registry.PutStorageState(ctx, &registryv1.PutStorageStateRequest{
			ProjectId: project, AuthSessionId: sessionID, Ciphertext: sealed, BaseRevision: s.GetStateRevision(), KnownGood: true,
		})
		if err = errs.FromStatus(err); errors.Is(err, errs.ErrStale) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return put.GetRevision(), nil
	}
	return 0, fmt.Errorf("storing the new state of session %s: too much contention", sessionID)
}

// markReady moves the session to READY on revision rev (re-reading its etag when
// another writer changed the record) and returns it as it was before.
func (o *Orchestrator) markReady(ctx context.Context, project, sessionID string, rev int64, runID string, earliest *timestamppb.Timestamp, origins []string) (*latchkeyv1.AuthSession, error) {
	for range 10 {
		s, err := o.session(ctx, project, sessionID)
		if err != nil {
			return nil, err
		}
		if s.GetState() == latchkeyv1.SessionState_SESSION_STATE_READY && s.GetStateRevision() > rev {
			return s, nil // a newer login already made it READY
		}
		next := o.nextRefresh(s, earliest)
		_, err = o.Registry.TransitionSession(ctx, &registryv1.TransitionSessionRequest{
			ProjectId: project, AuthSessionId: sessionID, ExpectedEtag: s.GetEtag(),
			ToState: latchkeyv1.SessionState_SESSION_STATE_READY, StateRevision: rev, RunId: runID,
			LastValidateTime: timestamppb.New(o.now()), Message: "logged in", NextRefreshTime: next,
			Origins: origins,
		})
		if err = errs.FromStatus(err); errors.Is(err, errs.ErrStale) {
			continue
		}
		if err != nil {
			return nil, err
		}
		o.refreshDue(next)
		return s, nil
	}
	return nil, fmt.Errorf("marking session %s READY: too much contention", sessionID)
}

// createFailed ends or retries a login that failed. Failures that mean the site said
// no are never retried; transient ones back off exponentially with full jitter until
// create_attempts are spent or the session's circuit opens. A failed login leaves the
// session EXPIRED (an update leaves it as it was).
func (o *Orchestrator) createFailed(ctx context.Context, rec *schedulerv1.RunRecord, reason latchkeyv1.FailureReason, msg string) error {
	run := rec.GetRun()
	project := run.GetProjectId()
	sess, err := o.session(ctx, project, run.GetAuthSessionId())
	if err != nil {
		return err
	}
	final := neverRetried(reason) || reason == latchkeyv1.FailureReason_FAILURE_REASON_LOGIN_BUDGET_EXHAUSTED ||
		reason == latchkeyv1.FailureReason_FAILURE_REASON_CANCELED_BY_USER || reason == latchkeyv1.FailureReason_FAILURE_REASON_CIRCUIT_OPEN
	if !final && o.circuitTrips(ctx, sess) {
		reason, msg, final = latchkeyv1.FailureReason_FAILURE_REASON_CIRCUIT_OPEN, "repeated login failures opened this session's circuit: "+msg, true
	}
	attempts := run.GetOptions().GetCreateAttempts()
	if attempts < 1 {
		attempts = 1
	}
	if !final && rec.GetCreateAttempts() < attempts {
		delay := o.backoff(rec.GetCreateAttempts())
		if _, err := o.Store.Update(ctx, project, run.GetId(), func(r *schedulerv1.RunRecord) error {
			r.Stage, r.NotBefore, r.Origins = schedulerv1.Stage_STAGE_BACKING_OFF, timestamppb.New(o.now().Add(delay)), rec.GetOrigins()
			return nil
		}); err != nil {
			return err
		}
		o.Log.InfoContext(ctx, "login failed, backing off", "run_id", run.GetId(), "reason", reason.String(), "delay", delay)
		return &RetryAfter{Delay: delay}
	}
	state := latchkeyv1.RunState_RUN_STATE_FAILED
	if reason == latchkeyv1.FailureReason_FAILURE_REASON_CANCELED_BY_USER {
		state = latchkeyv1.RunState_RUN_STATE_CANCELED
	}
	if err := o.finish(ctx, project, run.GetId(), state, reason, msg, nil); err != nil {
		return err
	}
	if run.GetKind() == latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE {
		o.completeUpdate(ctx, sess, run.GetId(), false)
	} else {
		o.expireSession(ctx, sess, reason, msg, run.GetId(), rec.GetOrigins()...)
	}
	o.releaseLease(ctx, sess, run.GetId())
	return o.WakeSession(ctx, project, sess.GetId())
}

// loginTimedOut lets a session go whose login Run reached its deadline (a slow site, a
// back-off past it). It counts as a transient login failure. A recreate hands the
// session back READY on the revision it had — the next Run's check finds it logged
// out and logs in again — rather than EXPIRED, which would need a person for what may
// be a slow moment; a first login (PENDING) has nothing to hand back and expires; an
// update discards its pending credentials. The lease is released and the waiters are
// woken either way.
func (o *Orchestrator) loginTimedOut(ctx context.Context, rec *schedulerv1.RunRecord) error {
	run := rec.GetRun()
	project, id := run.GetProjectId(), run.GetId()
	sess, err := o.session(ctx, project, run.GetAuthSessionId())
	if errors.Is(err, errs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	const msg = "the login did not finish before its Run's deadline"
	o.circuitTrips(ctx, sess)
	switch {
	case run.GetKind() == latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE:
		o.completeUpdate(ctx, sess, id, false)
	case sess.GetState() == latchkeyv1.SessionState_SESSION_STATE_PENDING:
		o.expireSession(ctx, sess, latchkeyv1.FailureReason_FAILURE_REASON_TIMEOUT, msg, id, rec.GetOrigins()...)
	case sess.GetState() == latchkeyv1.SessionState_SESSION_STATE_RECREATING:
		if _, err := o.Registry.TransitionSession(ctx, &registryv1.TransitionSessionRequest{
			ProjectId: project, AuthSessionId: sess.GetId(), ExpectedEtag: sess.GetEtag(),
			ToState: latchkeyv1.SessionState_SESSION_STATE_READY, RunId: id, Message: msg + "; the next Run logs in again",
		}); err != nil {
			// Another writer moved it on (a login that did finish, a person): its event
			// wakes the waiters.
			o.Log.InfoContext(ctx, "session changed before a timed-out login let it go", "auth_session_id", sess.GetId(), "error", err)
		}
	}
	o.releaseLease(ctx, sess, id)
	return o.WakeSession(ctx, project, sess.GetId())
}

// resumeBackoff continues a create after its back-off delay.
func (o *Orchestrator) resumeBackoff(ctx context.Context, rec *schedulerv1.RunRecord) error {
	if wait := rec.GetNotBefore().AsTime().Sub(o.now()); wait > 0 {
		return &RetryAfter{Delay: wait}
	}
	return o.dispatchCreate(ctx, rec.GetRun().GetProjectId(), rec.GetRun().GetId(), schedulerv1.Stage_STAGE_BACKING_OFF)
}

// backoff is the delay before a login's next attempt.
func (o *Orchestrator) backoff(attempt int32) time.Duration {
	return jittered(o.Policy.BackoffBase, o.Policy.BackoffMax, attempt)
}

// jittered is exponential with full jitter: uniform in [0, min(max, base*2^attempt)).
func jittered(base, maxDelay time.Duration, attempt int32) time.Duration {
	d := base << min(attempt, 20)
	if d <= 0 || d > maxDelay {
		d = maxDelay
	}
	return time.Duration(rand.Int64N(int64(d))) + time.Millisecond
}

// circuitOpen reports whether the session's circuit is open: CircuitThreshold
// transient login failures within the window. No login is tried while it is (with the
// cache unavailable it counts as closed, as budgets fail open).
func (o *Orchestrator) circuitOpen(ctx context.Context, sess *latchkeyv1.AuthSession) bool {
	if o.Policy.CircuitThreshold <= 0 {
		return false
	}
	b, err := o.Cache.Get(ctx, circuitKey(sess))
	if err != nil {
		return false
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	return err == nil && n >= o.Policy.CircuitThreshold
}

func circuitKey(sess *latchkeyv1.AuthSession) string {
	return "circuit." + sess.GetProjectId() + "." + sess.GetId()
}

// circuitTrips counts a transient login failure and reports whether the session's
// circuit is (now) open.
func (o *Orchestrator) circuitTrips(ctx context.Context, sess *latchkeyv1.AuthSession) bool {
	n, err := o.Cache.Incr(ctx, circuitKey(sess), o.Policy.CircuitWindow)
	if err == nil && o.CircuitOpened != nil && o.Policy.CircuitThreshold > 0 && n == o.Policy.CircuitThreshold {
		o.CircuitOpened(ctx)
	}
	return err == nil && o.Policy.CircuitThreshold > 0 && n >= o.Policy.CircuitThreshold
}

// completeUpdate tells the registry how an AUTHSESSION_UPDATE ended: on success the
// pending credentials replace the session's, otherwise they are discarded.
func (o *Orchestrator) completeUpdate(ctx context.Context, sess *latchkeyv1.AuthSession, runID string, succeeded bool) {
	if _, err := o.Registry.CompleteCredentialsUpdate(ctx, &registryv1.CompleteCredentialsUpdateRequest{
		ProjectId: sess.GetProjectId(), AuthSessionId: sess.GetId(), RunId: runID, Succeeded: succeeded,
	}); err != nil {
		o.Log.WarnContext(ctx, "completing credentials update failed", "auth_session_id", sess.GetId(), "run_id", runID, "error", err)
	}
}
