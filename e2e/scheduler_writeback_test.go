package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// marks are two APIs that each set a cookie of their own; the slow one holds its
// context long enough for the fast one to write its state back first.
const marks = `apis:
  mark-fast:
    steps:
      - goto: "{{ .Vars.baseURL }}/dashboard"
      - evaluate: 'document.cookie = "mark_fast=1; path=/; max-age=3600"'
  mark-slow:
    steps:
      - goto: "{{ .Vars.baseURL }}/dashboard"
      - evaluate: 'document.cookie = "mark_slow=1; path=/; max-age=3600"'
      - sleep: 2s
`

// TestRacingWriteBacksKeepEveryCookie starts two Runs on one session that each set a
// different cookie and end one after the other from the same starting revision: the
// stored state must hold both cookies (the later writer merges into the newer revision).
func TestRacingWriteBacksKeepEveryCookie(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	w.deploy(t, &latchkeyv1.BundleFile{Path: "marks.yaml", Content: []byte(marks)})
	sess := w.readySession(t)

	slow := w.start(t, "mark-slow", sess.GetId(), nil)
	// The slow Run is dispatched (on the session's current revision) before the fast
	// one starts from that same revision.
	w.eventually(t, 30*time.Second, func() (bool, string) {
		resp, err := w.runs.GetRun(t.Context(), &latchkeyv1.GetRunRequest{RunId: slow.GetId()})
		if err != nil {
			return false, err.Error()
		}
		return resp.GetRun().GetState() != latchkeyv1.RunState_RUN_STATE_QUEUED, "the slow Run is still " + resp.GetRun().GetState().String()
	})
	fast := w.start(t, "mark-fast", sess.GetId(), nil)
	for _, id := range []string{fast.GetId(), slow.GetId()} {
		if run := w.wait(t, id); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			t.Fatalf("%s = %s: %s", run.GetApi(), run.GetState(), run.GetFailureMessage())
		}
	}
	both := func(what string) {
		t.Helper()
		eventuallyWith(t, 10*time.Second, func() (bool, string) {
			exp, err := w.sessions.ExportStorageState(t.Context(), &latchkeyv1.ExportStorageStateRequest{AuthSessionId: sess.GetId()})
			if err != nil {
				return false, err.Error()
			}
			state := string(exp.GetStorageStateJson())
			fast, slow := strings.Contains(state, "mark_fast"), strings.Contains(state, "mark_slow")
			return fast && slow, fmt.Sprintf("a cookie was lost %s: mark_fast %v, mark_slow %v", what, fast, slow)
		}, func() string {
			var warnings []string
			for line := range strings.Lines(w.st.Logs.String()) {
				if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
					warnings = append(warnings, line)
				}
			}
			return "warnings and errors logged:\n" + strings.Join(warnings, "")
		})
	}
	both("in the write-back race")

	// The context that merged keeps its own cookies (the other writer's session token
	// is not its own); its next write-back must still keep the other writer's cookie.
	// list-invoices changes the state (the portal rotates its session cookie).
	for range 2 {
		if run := w.wait(t, w.start(t, "list-invoices", sess.GetId(), nil).GetId()); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			t.Fatalf("list-invoices = %s: %s", run.GetState(), run.GetFailureMessage())
		}
	}
	both("by the next write-backs of the contexts that raced")
}
