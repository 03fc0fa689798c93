package e2e

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// invoicesOf reads the invoice numbers list-invoices extracted.
func invoicesOf(run *latchkeyv1.Run) []string {
	var out []string
	for _, v := range run.GetOutput().GetStructValue().GetFields()["invoices"].GetListValue().GetValues() {
		out = append(out, v.GetStructValue().GetFields()["number"].GetStringValue())
	}
	return out
}

func wantInvoices(t *testing.T, run *latchkeyv1.Run) {
	t.Helper()
	want := portal.InvoicesFor(portal.AliceUsername)
	got := invoicesOf(run)
	if len(got) != len(want) {
		t.Fatalf("invoices = %v, want %d rows", got, len(want))
	}
	for i := range want {
		if got[i] != want[i].Number {
			t.Fatalf("invoice %d = %q, want %q", i, got[i], want[i].Number)
		}
	}
}

func TestSchedulerRunsAndRecreatesOnExpiry(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	sess := w.readySession(t)
	if sess.GetState() != latchkeyv1.SessionState_SESSION_STATE_READY || sess.GetStateRevision() == 0 {
		t.Fatalf("session after create = %s rev %d", sess.GetState(), sess.GetStateRevision())
	}
	logins := w.portal.Counters().Logins

	run := w.wait(t, w.start(t, "list-invoices", sess.GetId(), nil).GetId())
	if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("run = %s %s: %s", run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
	}
	wantInvoices(t, run)
	if len(run.GetChildRunIds()) != 1 {
		t.Errorf("child runs = %v, want one validate run", run.GetChildRunIds())
	}
	if n := w.portal.Counters().Logins; n != logins {
		t.Errorf("a READY session logged in again: %d logins, want %d", n, logins)
	}

	w.portal.ExpireSessions()
	run = w.wait(t, w.start(t, "list-invoices", sess.GetId(), nil).GetId())
	if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("run after expiry = %s %s: %s", run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
	}
	wantInvoices(t, run)
	if n := w.portal.Counters().Logins; n != logins+1 {
		t.Errorf("logins after expiry = %d, want %d", n, logins+1)
	}
	if got := w.session(t, sess.GetId()); got.GetState() != latchkeyv1.SessionState_SESSION_STATE_READY || got.GetStateRevision() <= sess.GetStateRevision() {
		t.Errorf("session after recreate = %s rev %d (was %d)", got.GetState(), got.GetStateRevision(), sess.GetStateRevision())
	}
}

func TestFiftyRunsOnAnExpiredSessionLogInOnce(t *testing.T) {
	// Not parallel: fifty Runs in Chromium at once take every core of a small machine
	// (CI has two), which would starve the tests that run to a clock (the recorder
	// URL's expiry, the key revocation's bound). Serial tests run before the parallel
	// ones, so this one has the machine to itself.
	w := newWorld(t, stacktest.Options{})
	sess := w.readySession(t)
	w.portal.ExpireSessions()
	logins := w.portal.Counters().Logins

	const n = 50
	var wg sync.WaitGroup
	runs := make([]*latchkeyv1.Run, n)
	errs := make([]error, n) // the goroutines report here; only the test's own fails the test
	for i := range n {
		wg.Go(func() { runs[i], errs[i] = w.startAndWatch(t.Context(), "list-invoices", sess.GetId()) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("starting and watching %d Runs: %v\nlogs:\n%s", n, err, tail(w.st.Logs.String()))
	}
	failed := false
	for i, run := range runs {
		if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			failed = true
			t.Errorf("run %d = %s %s: %s", i, run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
		}
	}
	if failed {
		for _, line := range strings.Split(w.st.Logs.String(), "\n") {
			if strings.Contains(line, `"level":"ERROR"`) || strings.Contains(line, `"level":"WARN"`) {
				t.Log(line)
			}
		}
	}
	if got := w.portal.Counters().Logins - logins; got != 1 {
		t.Fatalf("%d concurrent runs on an expired session made %d logins, want exactly 1", n, got)
	}
}

func TestWrongPasswordExpiresSessionAndIsNotRetried(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	// A RUNTIME session logs in with the credentials of the Run that needs it.
	sess, createID := w.createSession(t, latchkeyv1.SessionType_SESSION_TYPE_RUNTIME, alice())
	if run := w.wait(t, createID); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("create = %s %s", run.GetState(), run.GetFailureMessage())
	}
	w.portal.ExpireSessions()
	failed := w.portal.Counters().FailedLogins

	wrong := map[string]string{"username": portal.AliceUsername, "password": "not-the-password"}
	run := w.wait(t, w.start(t, "list-invoices", sess.GetId(), wrong).GetId())
	if run.GetState() != latchkeyv1.RunState_RUN_STATE_CANCELED || run.GetFailureReason() != latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED {
		t.Fatalf("run = %s %s: %s", run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
	}
	if got := w.portal.Counters().FailedLogins - failed; got != 1 {
		t.Errorf("failed logins = %d, want exactly 1 (wrong passwords are never retried)", got)
	}
	got := w.session(t, sess.GetId())
	if got.GetState() != latchkeyv1.SessionState_SESSION_STATE_EXPIRED || got.GetStateReason() != latchkeyv1.FailureReason_FAILURE_REASON_INVALID_CREDENTIALS {
		t.Errorf("session = %s %s, want EXPIRED INVALID_CREDENTIALS", got.GetState(), got.GetStateReason())
	}
	_, err := w.runs.StartRun(t.Context(), &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: sess.GetId()})
	if status.Code(err) != codes.FailedPrecondition || !hasReason(err, "AUTH_SESSION_EXPIRED") {
		t.Errorf("StartRun on an EXPIRED session: %v", err)
	}
	if got := w.portal.Counters().FailedLogins - failed; got != 1 {
		t.Errorf("failed logins later = %d, want still 1", got)
	}
}

func hasReason(err error, reason string) bool {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == reason {
			return true
		}
	}
	return false
}

func TestStartRunRejectsBadInput(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	cases := []struct {
		name string
		req  *latchkeyv1.StartRunRequest
		code codes.Code
	}{
		{"no api", &latchkeyv1.StartRunRequest{}, codes.InvalidArgument},
		{"unknown api", &latchkeyv1.StartRunRequest{Api: "no-such-api"}, codes.NotFound},
		{"unknown session", &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: "nope"}, codes.NotFound},
		{"create kind from a user", &latchkeyv1.StartRunRequest{Api: "auth-sessions/create", AuthSessionId: "x", Kind: latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE}, codes.PermissionDenied},
		{"too many retries", &latchkeyv1.StartRunRequest{Api: "list-invoices", Options: &latchkeyv1.RunOptions{Retries: 99}}, codes.InvalidArgument},
		{"credentials without session", &latchkeyv1.StartRunRequest{Api: "list-invoices", Credentials: map[string]string{"a": "b"}}, codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := w.runs.StartRun(t.Context(), tc.req)
			if status.Code(err) != tc.code {
				t.Fatalf("got %v, want %s", err, tc.code)
			}
		})
	}
	_, err := w.runs.GetRun(t.Context(), &latchkeyv1.GetRunRequest{RunId: "run-missing"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("GetRun of a missing run: %v", err)
	}
}
