package e2e

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	"github.com/latchkey/latchkey/libs/domain"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/testkit"
)

// The bursts at expiry: many Runs want a session at the moment the site logs it out.
// Exactly one login runs, logins never queue behind the Runs' checks (their own lane),
// and checks of a state already found logged out are answered without a browser.

// TestTwoHundredRunsOnAnExpiredSessionLogInOnce starts 200 Runs at once on a session
// the site has just logged out: one login at the portal, every Run SUCCEEDED. The
// watch has no fixed deadline: it fails only when no Run ends for a minute, so a slow
// machine is no failure but a stall is.
func TestTwoHundredRunsOnAnExpiredSessionLogInOnce(t *testing.T) {
	w := newWorld(t, stacktest.Options{Args: []string{"-log-level", "info"}})
	sess := w.readySession(t)
	w.portal.ExpireSessions()
	logins := w.portal.Counters().Logins

	ids := w.startMany(t, 200, "list-invoices", sess.GetId())
	runs := w.waitAll(t, ids, time.Minute)
	for i, run := range runs {
		if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			t.Errorf("run %d (%s) = %s %s: %s", i, run.GetId(), run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
		}
	}
	if got := w.portal.Counters().Logins - logins; got != 1 {
		t.Fatalf("200 Runs on an expired session made %d logins, want exactly 1", got)
	}
}

// TestChecksOfAKnownLoggedOutStateNeedNoBrowser queues ten Runs behind one runner slot
// on a session the site has logged out. The first check finds the state logged out;
// the nine checks queued for the same state revision are answered without a browser,
// so the portal sees one failing check, the login, its verification, and one passing
// check per Run — not ten failing ones.
func TestChecksOfAKnownLoggedOutStateNeedNoBrowser(t *testing.T) {
	w := newWorld(t, stacktest.Options{Env: map[string]string{"LATCHKEY_RUNNER_CONTEXTS": "1"}})
	sess := w.readySession(t)
	w.portal.ExpireSessions()
	before := w.portal.Counters()

	const n = 10
	runs := w.waitAll(t, w.startMany(t, n, "list-invoices", sess.GetId()), time.Minute)
	for _, run := range runs {
		if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			t.Fatalf("run %s = %s %s: %s", run.GetId(), run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
		}
	}
	after := w.portal.Counters()
	if got := after.Logins - before.Logins; got != 1 {
		t.Fatalf("logins = %d, want 1", got)
	}
	// 1 check finds the state logged out, the login's dashboard fetches /api/me once,
	// 1 check verifies the new state, n pass. Without the shortcut the n-1 queued
	// checks of the logged-out revision reach the site too (2n+2 in all).
	if got, want := after.MeRequests-before.MeRequests, int64(n+3); got != want {
		t.Errorf("the portal saw %d checks, want %d: checks of the known logged-out revision reached the site", got, want)
	}
}

// startMany starts n Runs of api on session from a few goroutines at once and returns
// their ids.
func (w *world) startMany(t testing.TB, n int, api, session string) []string {
	t.Helper()
	ids := make([]string, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	const starters = 8
	for g := range starters {
		wg.Go(func() {
			for i := g; i < n; i += starters {
				resp, err := w.runs.StartRun(t.Context(), &latchkeyv1.StartRunRequest{Api: api, AuthSessionId: session})
				if err != nil {
					errs <- fmt.Errorf("StartRun %d: %w", i, err)
					continue
				}
				ids[i] = resp.GetRun().GetId()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return ids
}

// waitAll polls the Runs until every one has ended and returns them in the order of
// ids. It fails only when none ends for stall: a slow machine is no failure.
func (w *world) waitAll(t testing.TB, ids []string, stall time.Duration) []*latchkeyv1.Run {
	t.Helper()
	got := make(map[string]*latchkeyv1.Run, len(ids))
	for len(got) < len(ids) {
		before := len(got)
		testkit.Eventually(t, stall, func() (bool, string) {
			for _, id := range ids {
				if got[id] != nil {
					continue
				}
				resp, err := w.runs.GetRun(t.Context(), &latchkeyv1.GetRunRequest{RunId: id})
				if err != nil {
					return false, fmt.Sprintf("GetRun %s: %v", id, err)
				}
				if domain.RunEnded(resp.GetRun().GetState()) {
					got[id] = resp.GetRun()
				}
			}
			return len(got) > before, fmt.Sprintf("%d of %d Runs ended, none in the last %s", len(got), len(ids), stall)
		})
	}
	out := make([]*latchkeyv1.Run, len(ids))
	for i, id := range ids {
		out[i] = got[id]
	}
	return out
}
