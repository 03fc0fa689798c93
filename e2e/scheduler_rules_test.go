package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	"github.com/latchkey/latchkey/libs/bus"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// TestSchedulerRules covers the rules of DESIGN.md section 3 that need no login to
// prove: each subtest states what a user relies on.
func TestSchedulerRules(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	sess := w.readySession(t)

	t.Run("an inconclusive check never logs in and leaves the session READY", func(t *testing.T) {
		logins := w.portal.Counters().Logins
		w.portal.SetFault(portal.Fault{Down: true})
		three := int32(3)
		resp, err := w.runs.StartRun(t.Context(), &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: sess.GetId(), Options: &latchkeyv1.RunOptions{CheckAttempts: &three}})
		if err != nil {
			t.Fatal(err)
		}
		run := w.wait(t, resp.GetRun().GetId())
		w.portal.SetFault(portal.Fault{})
		if run.GetState() != latchkeyv1.RunState_RUN_STATE_FAILED || run.GetFailureReason() != latchkeyv1.FailureReason_FAILURE_REASON_TRANSIENT {
			t.Fatalf("run = %s %s: %s", run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
		}
		if len(run.GetChildRunIds()) != 3 {
			t.Errorf("validate runs = %d, want 3 (check_attempts)", len(run.GetChildRunIds()))
		}
		if n := w.portal.Counters().Logins - logins; n != 0 {
			t.Errorf("%d logins on an inconclusive check", n)
		}
		if got := w.session(t, sess.GetId()); got.GetState() != latchkeyv1.SessionState_SESSION_STATE_READY {
			t.Errorf("session = %s, want READY", got.GetState())
		}
	})

	t.Run("the same idempotency key returns the same Run", func(t *testing.T) {
		req := &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: sess.GetId(), IdempotencyKey: "invoice-sync-42"}
		a, err := w.runs.StartRun(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := w.runs.StartRun(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if a.GetRun().GetId() != b.GetRun().GetId() {
			t.Fatalf("two Runs for one idempotency key: %s and %s", a.GetRun().GetId(), b.GetRun().GetId())
		}
		w.wait(t, a.GetRun().GetId())
	})

	t.Run("a run request published on NATS runs like StartRun, once per message id", func(t *testing.T) {
		nc, err := nats.Connect(w.st.NATSURL())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		runID := "run-from-nats-1"
		events := make(chan *nats.Msg, 64)
		sub, err := nc.ChanSubscribe("lk.events.run.acme."+runID, events)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		body, _ := proto.Marshal(&latchkeyv1.RunRequest{ApiKey: w.apiKey, RunId: runID,
			Request: &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: sess.GetId()}})
		for range 2 { // the same message twice: JetStream drops the duplicate
			m := nats.NewMsg("lk.runs.requests.acme")
			m.Data = body
			m.Header.Set(bus.HeaderMsgID, "order-7")
			if err := nc.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.After(60 * time.Second)
		for done := false; !done; {
			select {
			case m := <-events:
				ev := &eventsv1.RunEvent{}
				if proto.Unmarshal(m.Data, ev) == nil && isEnded(ev.GetRun().GetState()) {
					if ev.GetRun().GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
						t.Fatalf("run from NATS = %s: %s", ev.GetRun().GetState(), ev.GetRun().GetFailureMessage())
					}
					done = true
				}
			case <-deadline:
				t.Fatal("no final event for the run published on NATS")
			}
		}
		list, err := w.runs.ListRuns(t.Context(), &latchkeyv1.ListRunsRequest{Api: "list-invoices", Kinds: []latchkeyv1.RunKind{latchkeyv1.RunKind_RUN_KIND_API}, PageSize: 500})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range list.GetRuns() {
			if r.GetId() == runID {
				n++
			}
		}
		if n != 1 {
			t.Errorf("runs named %s: %d, want 1", runID, n)
		}
	})

	t.Run("with auto_recreate off a failed check cancels the Run and logs in nowhere", func(t *testing.T) {
		w.portal.ExpireSessions()
		logins := w.portal.Counters().Logins
		off := false
		resp, err := w.runs.StartRun(t.Context(), &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: sess.GetId(), Options: &latchkeyv1.RunOptions{AutoRecreate: &off}})
		if err != nil {
			t.Fatal(err)
		}
		run := w.wait(t, resp.GetRun().GetId())
		if run.GetState() != latchkeyv1.RunState_RUN_STATE_CANCELED || run.GetFailureReason() != latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED {
			t.Fatalf("run = %s %s", run.GetState(), run.GetFailureReason())
		}
		if n := w.portal.Counters().Logins - logins; n != 0 {
			t.Errorf("%d logins with auto_recreate off", n)
		}
	})
}

func isEnded(s latchkeyv1.RunState) bool {
	return s == latchkeyv1.RunState_RUN_STATE_SUCCEEDED || s == latchkeyv1.RunState_RUN_STATE_FAILED || s == latchkeyv1.RunState_RUN_STATE_CANCELED
}

// TestRecorderSessionsNeverLogInByThemselves imports a logged-in state into a RECORDER
// session, expires it on the portal, and sees the Run canceled and the session EXPIRED
// with no login attempt.
func TestRecorderSessionsNeverLogInByThemselves(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	resp, err := w.sessions.CreateAuthSession(t.Context(), &latchkeyv1.CreateAuthSessionRequest{
		Type: latchkeyv1.SessionType_SESSION_TYPE_RECORDER, Vars: map[string]string{"baseURL": w.portalURL},
		Recorder: &latchkeyv1.RecorderSettings{StartUrl: w.portalURL + "/login", FinishUrlPrefix: w.portalURL + "/dashboard"},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetAuthSession().GetId()
	if _, err := w.sessions.ImportStorageState(t.Context(), &latchkeyv1.ImportStorageStateRequest{AuthSessionId: id, StorageStateJson: loggedInState(t, w.portalURL)}); err != nil {
		t.Fatal(err)
	}
	if run := w.wait(t, w.start(t, "list-invoices", id, nil).GetId()); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("run on the recorded state = %s: %s", run.GetState(), run.GetFailureMessage())
	}
	w.portal.ExpireSessions()
	logins, failed := w.portal.Counters().Logins, w.portal.Counters().FailedLogins
	run := w.wait(t, w.start(t, "list-invoices", id, nil).GetId())
	if run.GetState() != latchkeyv1.RunState_RUN_STATE_CANCELED || run.GetFailureReason() != latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED {
		t.Fatalf("run = %s %s", run.GetState(), run.GetFailureReason())
	}
	if c := w.portal.Counters(); c.Logins != logins || c.FailedLogins != failed {
		t.Errorf("a RECORDER session tried to log in: %+v", c)
	}
	w.waitSession(t, id, "EXPIRED", func(s *latchkeyv1.AuthSession) bool {
		return s.GetState() == latchkeyv1.SessionState_SESSION_STATE_EXPIRED
	})
}

// TestLoginBudgetStopsAutomaticLogins gives sessions a budget of one login per hour:
// the create spends it, so when the portal expires the session no second login is
// attempted; the session needs a person (EXPIRED, LOGIN_BUDGET_EXHAUSTED).
func TestLoginBudgetStopsAutomaticLogins(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{Args: []string{"-session-login-budget", "1"}})
	sess := w.readySession(t)
	w.portal.ExpireSessions()
	c := w.portal.Counters()
	run := w.wait(t, w.start(t, "list-invoices", sess.GetId(), nil).GetId())
	if run.GetState() != latchkeyv1.RunState_RUN_STATE_CANCELED || run.GetFailureReason() != latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED {
		t.Fatalf("run = %s %s: %s", run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
	}
	if now := w.portal.Counters(); now.Logins != c.Logins || now.FailedLogins != c.FailedLogins {
		t.Errorf("a login past the budget reached the portal: %+v", now)
	}
	got := w.session(t, sess.GetId())
	if got.GetState() != latchkeyv1.SessionState_SESSION_STATE_EXPIRED || got.GetStateReason() != latchkeyv1.FailureReason_FAILURE_REASON_LOGIN_BUDGET_EXHAUSTED {
		t.Errorf("session = %s %s, want EXPIRED LOGIN_BUDGET_EXHAUSTED", got.GetState(), got.GetStateReason())
	}
	w.waitMetric(t, "latchkey_login_budget_exhausted_total", nil, 1)
}

// TestOriginLoginBudgetSpansSessions gives the portal's origin a budget of two logins:
// two sessions log in to it once each, and the third login to the same origin, by
// either session, is refused before it reaches the portal. The sessions learn the
// origin from their first login.
func TestOriginLoginBudgetSpansSessions(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{Args: []string{"-session-login-budget", "100", "-origin-login-budget", "2"}})
	a := w.readySession(t)
	b := w.readySession(t)
	for _, s := range []*latchkeyv1.AuthSession{a, b} {
		if !slices.Contains(s.GetOrigins(), w.portalURL) {
			t.Fatalf("session %s origins = %q, want the portal's origin %s", s.GetId(), s.GetOrigins(), w.portalURL)
		}
	}
	w.portal.ExpireSessions()
	c := w.portal.Counters()
	run := w.wait(t, w.start(t, "list-invoices", a.GetId(), nil).GetId())
	if run.GetState() != latchkeyv1.RunState_RUN_STATE_CANCELED || run.GetFailureReason() != latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED {
		t.Fatalf("run = %s %s: %s", run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
	}
	if now := w.portal.Counters(); now.Logins != c.Logins || now.FailedLogins != c.FailedLogins {
		t.Errorf("a login past the origin's budget reached the portal: %+v, before %+v", now, c)
	}
	got := w.session(t, a.GetId())
	if got.GetState() != latchkeyv1.SessionState_SESSION_STATE_EXPIRED || got.GetStateReason() != latchkeyv1.FailureReason_FAILURE_REASON_LOGIN_BUDGET_EXHAUSTED ||
		!strings.Contains(got.GetStateMessage(), w.portalURL) {
		t.Errorf("session = %s %s %q, want EXPIRED LOGIN_BUDGET_EXHAUSTED naming the origin", got.GetState(), got.GetStateReason(), got.GetStateMessage())
	}
}

// TestFailedLoginsTeachTheOriginBudget: a session whose first login fails (wrong
// password) still learns the site's origin, and that login counts: with a budget of
// one login per origin, fixing its credentials is refused before a second login
// reaches the portal.
func TestFailedLoginsTeachTheOriginBudget(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{Args: []string{"-session-login-budget", "100", "-origin-login-budget", "1"}})
	sess, createID := w.createSession(t, latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS,
		map[string]string{"username": portal.AliceUsername, "password": "wrong"})
	if run := w.wait(t, createID); run.GetFailureReason() != latchkeyv1.FailureReason_FAILURE_REASON_INVALID_CREDENTIALS {
		t.Fatalf("create with a wrong password = %s %s", run.GetState(), run.GetFailureReason())
	}
	// The session is expired right after its create Run ends.
	got := w.waitSession(t, sess.GetId(), "the session to expire", func(s *latchkeyv1.AuthSession) bool {
		return s.GetState() == latchkeyv1.SessionState_SESSION_STATE_EXPIRED
	})
	if !slices.Contains(got.GetOrigins(), w.portalURL) {
		t.Fatalf("after a failed first login the session knows origins %q, want %s", got.GetOrigins(), w.portalURL)
	}
	before := w.portal.Counters()
	resp, err := w.sessions.UpdateAuthSessionCredentials(t.Context(), &latchkeyv1.UpdateAuthSessionCredentialsRequest{AuthSessionId: sess.GetId(), Credentials: alice()})
	if err != nil {
		t.Fatal(err)
	}
	if run := w.wait(t, resp.GetUpdateRunId()); run.GetFailureReason() != latchkeyv1.FailureReason_FAILURE_REASON_LOGIN_BUDGET_EXHAUSTED {
		t.Fatalf("update past the origin's budget = %s %s: %s", run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
	}
	if now := w.portal.Counters(); now.Logins != before.Logins || now.FailedLogins != before.FailedLogins {
		t.Errorf("a login past the origin's budget reached the portal: %+v, before %+v", now, before)
	}
}

// TestTransientLoginFailuresBackOffThenOpenTheCircuit makes the portal's login page
// fail (500) while its check still answers: the recreate retries with back-off up to
// create_attempts, and the fifth transient failure of the session opens its circuit,
// which expires the session instead of trying again.
func TestTransientLoginFailuresBackOffThenOpenTheCircuit(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	sess := w.readySession(t)
	w.portal.SetFault(portal.Fault{LoginErrors: 1000})
	w.portal.ExpireSessions()
	five := int32(5)
	began := time.Now()
	resp, err := w.runs.StartRun(t.Context(), &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: sess.GetId(), Options: &latchkeyv1.RunOptions{CreateAttempts: &five}})
	if err != nil {
		t.Fatal(err)
	}
	run := w.wait(t, resp.GetRun().GetId())
	if run.GetState() != latchkeyv1.RunState_RUN_STATE_CANCELED || run.GetFailureReason() != latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED {
		t.Fatalf("run = %s %s: %s", run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
	}
	var create *latchkeyv1.Run
	for _, id := range run.GetChildRunIds() {
		r, err := w.runs.GetRun(t.Context(), &latchkeyv1.GetRunRequest{RunId: id})
		if err == nil && r.GetRun().GetKind() == latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE {
			create = r.GetRun()
		}
	}
	if create == nil || create.GetAttempt() != 5 || create.GetFailureReason() != latchkeyv1.FailureReason_FAILURE_REASON_CIRCUIT_OPEN {
		t.Fatalf("create run = %v, want 5 attempts ending CIRCUIT_OPEN", create)
	}
	got := w.session(t, sess.GetId())
	if got.GetState() != latchkeyv1.SessionState_SESSION_STATE_EXPIRED || got.GetStateReason() != latchkeyv1.FailureReason_FAILURE_REASON_CIRCUIT_OPEN {
		t.Errorf("session = %s %s, want EXPIRED CIRCUIT_OPEN", got.GetState(), got.GetStateReason())
	}
	w.waitMetric(t, "latchkey_circuit_opened_total", nil, 1)
	t.Logf("5 login attempts with back-off took %s", time.Since(began).Round(time.Millisecond))
}
