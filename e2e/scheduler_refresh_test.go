package e2e

import (
	"testing"
	"time"

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
	// 10 s leaves the refresh (due at ~7.5 s) room on a loaded 2-core CI machine.
	const ttl = 10 * time.Second
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
