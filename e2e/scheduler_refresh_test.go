package e2e

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// TestProactiveRefreshKeepsASessionAlive uses a portal whose sessions die after 10 s
// idle. The scheduler validates the session at about 75% of its cookie's lifetime
// (the check slides the portal's expiry and the rotated cookie is written back), so a
// Run started long after the session would have died finds it alive: no new login.
func TestProactiveRefreshKeepsASessionAlive(t *testing.T) {
	// Not parallel: the refresh must land within the portal's TTL, a race against the
	// clock that another test's Chromium on the same two cores lost once. Serial tests
	// run before the parallel ones, so this one has the machine to itself.
	// 16 s leaves the refresh (due at ~12 s) 4 s of room on a loaded 2-core CI machine;
	// with 10 s (2.5 s of room) it lost once more while the cmd/ tests' own stacks ran
	// beside it.
	const ttl = 16 * time.Second
	w := newWorldWith(t, portal.Config{SessionTTL: ttl}, stacktest.Options{Args: []string{"-refresh-interval", "500ms"}})
	sess := w.readySession(t)
	logins := w.portal.Counters().Logins

	// Staying idle for longer than the portal's TTL is the subject: only the
	// scheduler's proactive checks may keep the session alive meanwhile.
	time.Sleep(2*ttl + time.Second)
	got := w.session(t, sess.GetId())
	if got.GetLastValidateTime().AsTime().Before(time.Now().Add(-ttl)) {
		t.Errorf("the session was last validated at %s, more than the portal's TTL ago", got.GetLastValidateTime().AsTime())
	}
	run := w.wait(t, w.start(t, "list-invoices", sess.GetId(), nil).GetId())
	if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("run = %s: %s", run.GetState(), run.GetFailureMessage())
	}
	if n := w.portal.Counters().Logins - logins; n != 0 {
		t.Errorf("the session died while idle: %d new logins, want 0", n)
	}
}

// TestFifteenSecondKeepAlive: a site that logs out after a minute idle needs a
// keep-alive below a minute. 15 s is accepted, and the scheduler honours it even with a
// refresh interval of five minutes: it wakes when the registry says the next session
// falls due. Two checks follow the login within a minute; the old fixed-interval loop
// would have made none.
func TestFifteenSecondKeepAlive(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{Args: []string{"-refresh-interval", "5m"}})
	resp, err := w.sessions.CreateAuthSession(t.Context(), &latchkeyv1.CreateAuthSessionRequest{
		Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Credentials: alice(), Vars: map[string]string{"baseURL": w.portalURL},
		Refresh: &latchkeyv1.RefreshSettings{KeepAliveInterval: durationpb.New(15 * time.Second)},
	})
	if err != nil {
		t.Fatalf("CreateAuthSession with a 15 s keep-alive: %v", err)
	}
	if run := w.wait(t, resp.GetCreateRunId()); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("login: %s %s", run.GetState(), run.GetFailureMessage())
	}
	id := resp.GetAuthSession().GetId()
	var checks []time.Time
	w.waitSession(t, id, "two keep-alive checks", func(s *latchkeyv1.AuthSession) bool {
		if at := s.GetLastValidateTime(); at != nil && (len(checks) == 0 || at.AsTime().After(checks[len(checks)-1])) {
			checks = append(checks, at.AsTime())
		}
		return len(checks) >= 3 // the login's own validation, then two keep-alive checks
	})
	if gap := checks[2].Sub(checks[1]); gap < 13*time.Second {
		t.Errorf("keep-alive checks %s apart, want about 15 s (±10%%)", gap)
	}

	_, err = w.sessions.CreateAuthSession(t.Context(), &latchkeyv1.CreateAuthSessionRequest{
		Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Credentials: alice(), Vars: map[string]string{"baseURL": w.portalURL},
		Refresh: &latchkeyv1.RefreshSettings{KeepAliveInterval: durationpb.New(14 * time.Second)},
	})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "15s") {
		t.Errorf("a 14 s keep-alive: %v, want InvalidArgument naming the 15s minimum", err)
	}
}
