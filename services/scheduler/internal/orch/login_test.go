package orch

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/domain"
	"github.com/latchkey/latchkey/libs/errs"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
)

// TestManyRunsOnAnExpiredSessionLogInOnce: "However many Runs find the same session
// expired at once, exactly one login runs" — 20 Runs answered NEEDS_AUTH at the same
// time make one CREATE task; the others wait; the candidate state is checked in a
// fresh context; once READY every Run is dispatched again, checking first.
func TestManyRunsOnAnExpiredSessionLogInOnce(t *testing.T) {
	t.Parallel()
	const n = 20
	h := newHarness(t)
	h.reg.add(sessID, typeCredentials, sessReady)
	var runs []string
	for range n {
		runs = append(runs, h.start(apiRequest(nil)).GetId())
	}
	tasks := h.takeTasksOf(taskAPI, n)
	for _, task := range tasks {
		if h.onLoginLane(task) {
			t.Fatalf("API task %s came on the login lane", task.GetTaskId())
		}
	}

	// The results arrive at once, as on 16 consumer workers and several replicas.
	errc := make(chan error, n)
	var wg sync.WaitGroup
	for _, task := range tasks {
		wg.Go(func() {
			if err := h.o.HandleResult(t.Context(), result(task, statusNeedsAuth)); err != nil && !ErrStale(err) {
				errc <- err
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Errorf("HandleResult(NEEDS_AUTH): %v", err)
	}

	create := h.takeTask(taskCreate)
	if create.GetSession().GetStateRevision() != 0 || !create.GetFreshContext() || create.GetApi() != recipe.CreateAPI ||
		create.GetCredentials().GetSecretId() != domain.CredentialsSecret(sessID) || create.GetAttempt() != 1 {
		t.Fatalf("create task = %v, want a first login from an empty state with the session's secret", create)
	}
	// Logins never queue behind the API work that waits for them: their own lane.
	if !h.onLoginLane(create) {
		t.Errorf("the create task came on the API lane, want the login lane")
	}
	h.wantSession(sessID, sessRecreating, noReason)
	if got := h.reg.transitionsTo(sessRecreating); got != 1 {
		t.Errorf("%d transitions to RECREATING, want 1", got)
	}
	if holder := h.leaseHolder(sessID); holder != create.GetRunId() {
		t.Errorf("lease held by %q, want the create Run %s", holder, create.GetRunId())
	}
	createRun := h.wantRun(create.GetRunId(), runRunning, noReason).GetRun()
	if createRun.GetKind() != latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE || !slices.Contains(runs, createRun.GetParentRunId()) {
		t.Fatalf("create Run = %v, want an AUTHSESSION_CREATE child of one of the Runs", createRun)
	}
	for i, id := range runs {
		rec := h.wantRun(id, runRunning, noReason)
		if rec.GetStage() != schedulerv1.Stage_STAGE_WAITING_SESSION {
			t.Errorf("run %s is in stage %s, want WAITING_SESSION", id, rec.GetStage())
		}
		h.wantRun(tasks[i].GetCheckRunId(), runFailed, reasonExpired)
	}
	if got := h.deliverEvents(); !slices.Equal(got, []eventsv1.SessionEventType{eventsv1.SessionEventType_SESSION_EVENT_TYPE_RECREATING}) {
		t.Errorf("events %v, want RECREATING", got)
	}
	h.noTasks() // RECREATING wakes nobody

	h.mustHandle(loggedIn(create))
	check := h.takeTask(taskCheck)
	if !check.GetFreshContext() || !bytes.Equal(check.GetCandidateStateCiphertext(), loggedIn(create).GetCapturedStateCiphertext()) ||
		check.GetRunId() != create.GetRunId() || check.GetSession().GetAuthSessionId() != sessID {
		t.Fatalf("check task = %v, want the candidate checked in a fresh context", check)
	}
	if !h.onLoginLane(check) {
		t.Errorf("the verification of the new state came on the API lane, want the login lane")
	}
	h.wantSession(sessID, sessRecreating, noReason) // not READY before the check passes

	h.mustHandle(checked(check, valid))
	sess := h.wantSession(sessID, sessReady, noReason)
	if sess.GetStateRevision() != 2 || !bytes.Equal(h.reg.state(sessID, 2), check.GetCandidateStateCiphertext()) {
		t.Fatalf("session on revision %d holding %q, want the candidate as revision 2", sess.GetStateRevision(), h.reg.state(sessID, 2))
	}
	if puts := h.reg.putCalls(); len(puts) != 1 || !puts[0].req.GetKnownGood() || puts[0].req.GetBaseRevision() != 1 {
		t.Fatalf("state puts %v, want one known-good put on revision 1", puts)
	}
	h.wantRun(create.GetRunId(), runSucceeded, noReason)
	if holder := h.leaseHolder(sessID); holder != "" {
		t.Errorf("lease still held by %q after the login", holder)
	}
	if got := h.deliverEvents(); !slices.Contains(got, eventsv1.SessionEventType_SESSION_EVENT_TYPE_RECREATED) {
		t.Errorf("events %v, want RECREATED", got)
	}

	again := h.takeTasksOf(taskAPI, n)
	var redone []string
	for _, task := range again {
		if !task.GetCheckFirst() || task.GetSession().GetStateRevision() != 2 || task.GetAttempt() != 2 {
			t.Errorf("task after the login = %v, want attempt 2 checking revision 2 first", task)
		}
		redone = append(redone, task.GetRunId())
		h.mustHandle(result(task, statusSucceeded))
	}
	slices.Sort(redone)
	slices.Sort(runs)
	if !slices.Equal(redone, runs) {
		t.Fatalf("dispatched again: %v, want every waiting Run %v", redone, runs)
	}
	for _, id := range runs {
		h.wantRun(id, runSucceeded, noReason)
	}
	h.noTasks()
}

// TestLoginFailuresTheSiteMeansAreNeverRetried: "A login that fails because the
// credentials are wrong is not retried: retrying wrong passwords locks accounts" —
// INVALID_CREDENTIALS, ACCOUNT_LOCKED and RATE_LIMITED make one CREATE however many
// attempts the Run allows; the session is EXPIRED with the reason and the waiting
// Runs are CANCELED.
func TestLoginFailuresTheSiteMeansAreNeverRetried(t *testing.T) {
	t.Parallel()
	for _, reason := range []latchkeyv1.FailureReason{
		latchkeyv1.FailureReason_FAILURE_REASON_INVALID_CREDENTIALS,
		latchkeyv1.FailureReason_FAILURE_REASON_ACCOUNT_LOCKED,
		latchkeyv1.FailureReason_FAILURE_REASON_RATE_LIMITED,
	} {
		t.Run(reason.String(), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.reg.add(sessID, typeCredentials, sessReady)
			opts := &latchkeyv1.RunOptions{CreateAttempts: proto.Int32(MaxCreateAttempts)}
			first, second := h.start(apiRequest(opts)), h.start(apiRequest(opts))
			for _, task := range h.takeTasksOf(taskAPI, 2) {
				h.mustHandle(result(task, statusNeedsAuth))
			}
			create := h.takeTask(taskCreate)

			if retry := h.handle(failed(create, reason)); retry != nil {
				t.Fatalf("a %s login backs off for %s, want no retry", reason, retry.Delay)
			}
			h.noTasks()
			h.wantSession(sessID, sessExpired, reason)
			rec := h.wantRun(create.GetRunId(), runFailed, reason)
			if rec.GetCreateAttempts() != 1 {
				t.Errorf("%d create attempts, want 1", rec.GetCreateAttempts())
			}
			h.wantRun(first.GetId(), runCanceled, reasonExpired)
			h.wantRun(second.GetId(), runCanceled, reasonExpired)
			if got := h.deliverEvents(); !slices.Contains(got, eventsv1.SessionEventType_SESSION_EVENT_TYPE_EXPIRED) {
				t.Errorf("events %v, want EXPIRED", got)
			}
			h.noTasks()
			if holder := h.leaseHolder(sessID); holder != "" {
				t.Errorf("lease still held by %q", holder)
			}
			if _, err := h.o.Start(t.Context(), testProject, apiRequest(nil), StartOptions{}); !errors.Is(err, ErrSessionExpired) {
				t.Errorf("Start after the failed login: %v, want ErrSessionExpired", err)
			}
		})
	}
}

// TestTransientLoginFailureBacksOff: "Transient failures back off exponentially with
// jitter" — the result is redelivered after the delay (a JetStream NakWithDelay, here
// the fake clock), and only then does the next attempt start.
func TestTransientLoginFailureBacksOff(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.add(sessID, typeCredentials, sessReady)
	run, _ := h.startFailingCheck(&latchkeyv1.RunOptions{CreateAttempts: proto.Int32(3)})
	create := h.takeTask(taskCreate)
	res := failed(create, reasonTransient)

	retry := h.handle(res)
	if retry == nil || retry.Delay <= 0 || retry.Delay > h.o.Policy.BackoffMax+time.Millisecond {
		t.Fatalf("first transient failure: retry %v, want a back-off within (0, %s]", retry, h.o.Policy.BackoffMax+time.Millisecond)
	}
	rec := h.record(create.GetRunId())
	if rec.GetStage() != schedulerv1.Stage_STAGE_BACKING_OFF || rec.GetNotBefore() == nil {
		t.Fatalf("create record after a transient failure: %v", rec)
	}
	h.noTasks()
	h.wantSession(sessID, sessRecreating, noReason)

	// Redelivered early (another replica, a short NakWithDelay): still waiting.
	if early := h.handle(res); early == nil || early.Delay > retry.Delay {
		t.Fatalf("early redelivery: retry %v, want the rest of %s", early, retry.Delay)
	}
	h.noTasks()

	h.clock.Advance(retry.Delay)
	h.mustHandle(res)
	second := h.takeTask(taskCreate)
	if second.GetAttempt() != 2 || second.GetRunId() != create.GetRunId() {
		t.Fatalf("second login = %v, want attempt 2 of the same create Run", second)
	}
	h.mustHandle(loggedIn(second))
	h.mustHandle(checked(h.takeTask(taskCheck), valid))
	h.wantSession(sessID, sessReady, noReason)
	h.wantRun(create.GetRunId(), runSucceeded, noReason)
	h.mustHandle(result(h.takeTask(taskAPI), statusSucceeded))
	h.wantRun(run.GetId(), runSucceeded, noReason)
}

// TestRepeatedLoginFailuresOpenTheCircuit: "repeated failures open a per-session
// circuit" — after CircuitThreshold transient failures the login stops with
// CIRCUIT_OPEN although the Run allowed more attempts.
func TestRepeatedLoginFailuresOpenTheCircuit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(p *Policy) { p.CircuitThreshold = 2 })
	h.reg.add(sessID, typeCredentials, sessReady)
	run, _ := h.startFailingCheck(&latchkeyv1.RunOptions{CreateAttempts: proto.Int32(MaxCreateAttempts)})

	create := h.takeTask(taskCreate)
	retry := h.handle(failed(create, reasonTransient))
	if retry == nil {
		t.Fatal("the first transient failure did not back off")
	}
	h.clock.Advance(retry.Delay)
	h.mustHandle(failed(create, reasonTransient)) // the redelivery starts attempt 2
	second := h.takeTask(taskCreate)
	if retry := h.handle(failed(second, reasonTransient)); retry != nil {
		t.Fatalf("the failure that reaches the threshold backs off for %s, want the circuit open", retry.Delay)
	}
	h.noTasks()
	circuit := latchkeyv1.FailureReason_FAILURE_REASON_CIRCUIT_OPEN
	h.wantRun(create.GetRunId(), runFailed, circuit)
	h.wantSession(sessID, sessExpired, circuit)
	h.wantRun(run.GetId(), runCanceled, reasonExpired)
}

// TestOpenCircuitRefusesRecreates: Policy.CircuitThreshold says the open circuit
// refuses recreates for CircuitWindow. A session revived meanwhile (a person imported
// a state) that is found logged out again must not log in before the window ends.
func TestOpenCircuitRefusesRecreates(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(p *Policy) { p.CircuitThreshold = 1 })
	h.reg.add(sessID, typeCredentials, sessReady)
	h.startFailingCheck(nil)
	h.mustHandle(failed(h.takeTask(taskCreate), reasonTransient))
	h.wantSession(sessID, sessExpired, latchkeyv1.FailureReason_FAILURE_REASON_CIRCUIT_OPEN)

	// A person imports a working state; a minute later it is logged out again.
	h.reg.edit(sessID, func(s *latchkeyv1.AuthSession) {
		s.State, s.StateReason, s.StateMessage = sessReady, noReason, ""
	})
	h.clock.Advance(time.Minute)
	run, _ := h.startFailingCheck(nil)
	h.noTasks() // no CREATE while the circuit is open
	h.wantRun(run.GetId(), runCanceled, reasonExpired)
	h.wantSession(sessID, sessExpired, latchkeyv1.FailureReason_FAILURE_REASON_CIRCUIT_OPEN)
}

// TestCandidateStateMustPassCheckInAFreshContext: "A captured state is only accepted
// after check passes on it in a fresh browser context" — a candidate that does not
// pass makes the create count as failed: the session never becomes READY with it.
func TestCandidateStateMustPassCheckInAFreshContext(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		outcome   latchkeyv1.CheckOutcome
		attempts  int32
		wantRetry bool
	}{
		{"INVALID, one attempt", invalidState, 1, false},
		{"INCONCLUSIVE, one attempt", inconclusive, 1, false},
		{"INVALID, two attempts", invalidState, 2, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.reg.add(sessID, typeCredentials, sessReady)
			run, _ := h.startFailingCheck(&latchkeyv1.RunOptions{CreateAttempts: proto.Int32(tc.attempts)})
			create := h.takeTask(taskCreate)
			h.mustHandle(loggedIn(create))
			check := h.takeTask(taskCheck)
			if !check.GetFreshContext() || len(check.GetCandidateStateCiphertext()) == 0 {
				t.Fatalf("check task = %v, want the candidate in a fresh context", check)
			}

			retry := h.handle(checked(check, tc.outcome))
			if (retry != nil) != tc.wantRetry {
				t.Fatalf("retry %v, want a back-off: %v", retry, tc.wantRetry)
			}
			if len(h.reg.putCalls()) != 0 {
				t.Errorf("the rejected candidate was stored: %v", h.reg.putCalls())
			}
			if n := h.reg.transitionsTo(sessReady); n != 0 {
				t.Errorf("%d transitions to READY with a rejected candidate", n)
			}
			if tc.wantRetry {
				h.clock.Advance(retry.Delay)
				h.mustHandle(checked(check, tc.outcome))
				if next := h.takeTask(taskCreate); next.GetAttempt() != 2 {
					t.Fatalf("next login = %v, want attempt 2", next)
				}
				h.wantSession(sessID, sessRecreating, noReason)
				return
			}
			h.noTasks()
			h.wantRun(create.GetRunId(), runFailed, reasonTransient)
			h.wantSession(sessID, sessExpired, reasonTransient)
			h.wantRun(run.GetId(), runCanceled, reasonExpired)
		})
	}
}

// TestLoginBudgets: "Logins are budgeted per session and per target origin; past the
// budget the session is EXPIRED with reason LOGIN_BUDGET_EXHAUSTED" — and no CREATE
// task is sent.
func TestLoginBudgets(t *testing.T) {
	t.Parallel()
	const origin = "https://portal.example"
	cases := []struct {
		name   string
		policy func(*Policy)
		second string // the session of the second login
		want   string // in the expired session's message
	}{
		{"per session", func(p *Policy) { p.SessionBudget = 1 }, sessID, "logins for this session"},
		{"per origin, across sessions", func(p *Policy) { p.OriginBudget = 1 }, "s2", origin},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, tc.policy)
			h.reg.add(sessID, typeCredentials, sessReady, origin)
			h.reg.add("s2", typeCredentials, sessReady, origin)

			// The first login is within the budget.
			first, _ := h.startFailingCheck(nil)
			h.login()
			h.mustHandle(result(h.takeTask(taskAPI), statusSucceeded))
			h.wantRun(first.GetId(), runSucceeded, noReason)

			// The second is refused before any browser is asked to log in.
			req := apiRequest(nil)
			req.AuthSessionId = tc.second
			second := h.start(req)
			h.mustHandle(result(h.takeTask(taskAPI), statusNeedsAuth))
			h.noTasks()
			exhausted := latchkeyv1.FailureReason_FAILURE_REASON_LOGIN_BUDGET_EXHAUSTED
			sess := h.wantSession(tc.second, sessExpired, exhausted)
			if !strings.Contains(sess.GetStateMessage(), tc.want) {
				t.Errorf("session message %q does not name %q", sess.GetStateMessage(), tc.want)
			}
			h.wantRun(second.GetId(), runCanceled, reasonExpired)
			h.wantRun(h.createChild(second.GetId()), runFailed, exhausted)
		})
	}
}

// TestRecorderSessionsNeverRecreate: "RECORDER sessions never auto-recreate: a failed
// check marks them EXPIRED" — the Run is CANCELED and no CREATE task is sent.
func TestRecorderSessionsNeverRecreate(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.add(sessID, typeRecorder, sessReady)
	first := h.start(apiRequest(nil))
	second := h.start(apiRequest(nil))
	tasks := h.takeTasksOf(taskAPI, 2)

	h.mustHandle(result(tasks[0], statusNeedsAuth))
	h.wantSession(sessID, sessExpired, reasonExpired)
	h.wantRun(first.GetId(), runCanceled, reasonExpired)
	// A Run whose check was already running meets the same end.
	h.mustHandle(result(tasks[1], statusNeedsAuth))
	h.wantRun(second.GetId(), runCanceled, reasonExpired)

	h.noTasks()
	if n := h.reg.transitionsTo(sessRecreating); n != 0 {
		t.Errorf("%d recreate transitions of a RECORDER session", n)
	}
	if got := h.deliverEvents(); !slices.Equal(got, []eventsv1.SessionEventType{eventsv1.SessionEventType_SESSION_EVENT_TYPE_EXPIRED}) {
		t.Errorf("events %v, want one EXPIRED", got)
	}
	h.noTasks()
}

// TestLoginAsksForMoreInformation: "A create may stop and ask for more information:
// the Run enters REQUESTED_MORE_INFO ... and the caller answers with ResumeRun; the
// create then goes on from where it stopped."
func TestLoginAsksForMoreInformation(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.add(sessID, typeCredentials, sessReady)
	run, _ := h.startFailingCheck(nil)
	create := h.takeTask(taskCreate)
	ask := result(create, statusMoreInfo)
	ask.MoreInfo = &latchkeyv1.MoreInfoRequest{Field: "sms_code", Prompt: "the code sent to +44 7700 900000"}
	h.mustHandle(ask)

	rec := h.wantRun(create.GetRunId(), runMoreInfo, noReason)
	if !proto.Equal(rec.GetRun().GetMoreInfo(), ask.GetMoreInfo()) {
		t.Fatalf("more_info = %v, want %v", rec.GetRun().GetMoreInfo(), ask.GetMoreInfo())
	}
	if api := h.wantRun(run.GetId(), runRunning, noReason); !slices.Contains(api.GetRun().GetChildRunIds(), create.GetRunId()) {
		t.Fatalf("the API Run does not name its create Run: %v", api.GetRun().GetChildRunIds())
	}

	ctx := t.Context()
	subj, err := bus.ResumeSubject(create.GetRunId())
	if err != nil {
		t.Fatal(err)
	}
	sub, err := h.o.NC.SubscribeSync(subj)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	refusals := []struct {
		name    string
		runID   string
		answers map[string]string
		want    error
	}{
		{"a Run that asked nothing", run.GetId(), map[string]string{"sms_code": "123456"}, ErrNotWaiting},
		{"the asked field missing", create.GetRunId(), map[string]string{"code": "123456"}, errs.ErrInvalid},
		{"no answers", create.GetRunId(), nil, errs.ErrInvalid},
		{"an unknown Run", "run-nope", map[string]string{"sms_code": "1"}, ErrRunNotFound},
	}
	for _, r := range refusals {
		if _, err := h.o.Resume(ctx, testProject, r.runID, r.answers); !errors.Is(err, r.want) {
			t.Errorf("Resume (%s): %v, want %v", r.name, err, r.want)
		}
	}
	h.wantRun(create.GetRunId(), runMoreInfo, noReason)

	resumed, err := h.o.Resume(ctx, testProject, create.GetRunId(), map[string]string{"sms_code": "123456"})
	if err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if resumed.GetState() != runRunning || resumed.GetMoreInfo() != nil {
		t.Fatalf("resumed Run = %v, want RUNNING", resumed)
	}
	h.wantRun(create.GetRunId(), runRunning, noReason)
	msg, err := sub.NextMsg(waitNATS)
	if err != nil {
		t.Fatalf("no TaskResume on %s: %v", subj, err)
	}
	got := &runnerv1.TaskResume{}
	if err := proto.Unmarshal(msg.Data, got); err != nil {
		t.Fatal(err)
	}
	want := &runnerv1.TaskResume{RunId: create.GetRunId(), AnswersCiphertext: sealedFor(domain.KindResumeAnswers, create.GetRunId())}
	if !proto.Equal(got, want) {
		t.Fatalf("TaskResume = %v, want %v", got, want)
	}
	if enc := h.vault.encryptCalls(); len(enc) != 1 || !bytes.Contains(enc[0].GetPlaintext(), []byte("123456")) {
		t.Fatalf("vault encrypts %v, want the answers sealed once", enc)
	}
	if _, err := h.o.Resume(ctx, testProject, create.GetRunId(), map[string]string{"sms_code": "123456"}); !errors.Is(err, ErrNotWaiting) || !errors.Is(err, errs.ErrPrecondition) {
		t.Errorf("a second Resume: %v, want ErrNotWaiting", err)
	}
	h.noTasks() // the same CREATE task goes on

	h.mustHandle(loggedIn(create))
	h.mustHandle(checked(h.takeTask(taskCheck), valid))
	h.wantSession(sessID, sessReady, noReason)
	h.mustHandle(result(h.takeTask(taskAPI), statusSucceeded))
	h.wantRun(run.GetId(), runSucceeded, noReason)
}

// TestNoCheckWhileALoginRuns: a Run that starts, or comes back for another attempt,
// while its session is RECREATING dispatches no check (it would only find the state
// logged out again); it waits for the login's event and then checks the new state.
func TestNoCheckWhileALoginRuns(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.add(sessID, typeCredentials, sessReady)
	retried := h.start(apiRequest(&latchkeyv1.RunOptions{Retries: 1}))
	retriedTask := h.takeTask(taskAPI)
	first, _ := h.startFailingCheck(nil)
	create := h.takeTask(taskCreate)
	h.wantSession(sessID, sessRecreating, noReason)

	// A new Run during the login, and another attempt of a Run whose API failed.
	late := h.start(apiRequest(nil))
	h.mustHandle(failed(retriedTask, reasonTransient))
	h.noTasks()
	for _, id := range []string{late.GetId(), retried.GetId()} {
		if rec := h.wantRun(id, runRunning, noReason); rec.GetStage() != schedulerv1.Stage_STAGE_WAITING_SESSION {
			t.Fatalf("run %s during the login is in stage %s, want WAITING_SESSION", id, rec.GetStage())
		}
	}

	h.mustHandle(loggedIn(create))
	h.mustHandle(checked(h.takeTask(taskCheck), valid))
	h.deliverEvents()
	want := []string{first.GetId(), late.GetId(), retried.GetId()}
	var got []string
	for _, task := range h.takeTasksOf(taskAPI, len(want)) {
		if !task.GetCheckFirst() || task.GetSession().GetStateRevision() != 2 {
			t.Errorf("task after the login = %v, want a check of revision 2 first", task)
		}
		got = append(got, task.GetRunId())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("dispatched after the login: %v, want %v", got, want)
	}
}
