package scheduler

import (
	"testing"
	"time"

	"github.com/latchkey/latchkey/services/scheduler/internal/orch"
)

// TestRefreshWait: the refresh loop wakes for a session due before the interval (a
// 15 s keep-alive under a 30 s interval), never spins faster than the round lease
// allows, and waits the interval when nothing is due sooner.
func TestRefreshWait(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, tc := range []struct {
		name string
		next time.Time
		want time.Duration
	}{
		{"nothing will be due", time.Time{}, 30 * time.Second},
		{"due after the interval", now.Add(time.Minute), 30 * time.Second},
		{"due before the interval", now.Add(12 * time.Second), 12 * time.Second},
		{"due now", now, orch.MinRefreshSpacing},
		{"overdue", now.Add(-time.Minute), orch.MinRefreshSpacing},
	} {
		if got := refreshWait(30*time.Second, tc.next, now); got != tc.want {
			t.Errorf("%s: wait %s, want %s", tc.name, got, tc.want)
		}
	}
}
