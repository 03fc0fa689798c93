package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// TestCredentialUpdatesReplaceOnlyOnSuccess updates a READY session's credentials:
// a wrong password fails the AUTHSESSION_UPDATE Run and leaves the session and its
// stored credentials as they were; the right one succeeds.
func TestCredentialUpdatesReplaceOnlyOnSuccess(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	sess := w.readySession(t)

	resp, err := w.sessions.UpdateAuthSessionCredentials(t.Context(), &latchkeyv1.UpdateAuthSessionCredentialsRequest{
		AuthSessionId: sess.GetId(), Credentials: map[string]string{"username": portal.AliceUsername, "password": "wrong"},
	})
	if err != nil {
		t.Fatal(err)
	}
	run := w.wait(t, resp.GetUpdateRunId())
	if run.GetKind() != latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE || run.GetState() != latchkeyv1.RunState_RUN_STATE_FAILED || run.GetFailureReason() != latchkeyv1.FailureReason_FAILURE_REASON_INVALID_CREDENTIALS {
		t.Fatalf("update run = %s %s %s", run.GetKind(), run.GetState(), run.GetFailureReason())
	}
	if got := w.session(t, sess.GetId()); got.GetState() != latchkeyv1.SessionState_SESSION_STATE_READY {
		t.Fatalf("a failed update changed the session: %s", got.GetState())
	}
	// The old credentials still log in when the session expires.
	w.portal.ExpireSessions()
	if run := w.wait(t, w.start(t, "list-invoices", sess.GetId(), nil).GetId()); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("run after a failed update = %s: %s", run.GetState(), run.GetFailureMessage())
	}

	resp, err = w.sessions.UpdateAuthSessionCredentials(t.Context(), &latchkeyv1.UpdateAuthSessionCredentialsRequest{AuthSessionId: sess.GetId(), Credentials: alice()})
	if err != nil {
		t.Fatal(err)
	}
	if run := w.wait(t, resp.GetUpdateRunId()); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("update with the right password = %s: %s", run.GetState(), run.GetFailureMessage())
	}
	if got := w.session(t, sess.GetId()); got.GetState() != latchkeyv1.SessionState_SESSION_STATE_READY || got.GetStateRevision() <= sess.GetStateRevision() {
		t.Fatalf("session after the update = %s rev %d", got.GetState(), got.GetStateRevision())
	}
}

// TestRuntimeCredentialsAreNeverStored logs a RUNTIME session in twice with a canary
// password passed in Runs, then scans the JetStream store files and the logs: the
// canary, in any common encoding, is nowhere.
func TestRuntimeCredentialsAreNeverStored(t *testing.T) {
	t.Parallel()
	const canary = "runtime-canary-7f3a9c2e"
	users := append(portal.DefaultUsers(), portal.User{Username: "dave", Password: canary})
	w := newWorldWith(t, portal.Config{Users: users}, stacktest.Options{})
	creds := map[string]string{"username": "dave", "password": canary}
	sess, createID := w.createSession(t, latchkeyv1.SessionType_SESSION_TYPE_RUNTIME, creds)
	if run := w.wait(t, createID); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("create = %s: %s", run.GetState(), run.GetFailureMessage())
	}
	w.portal.ExpireSessions()
	if run := w.wait(t, w.start(t, "list-invoices", sess.GetId(), creds).GetId()); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("run = %s: %s", run.GetState(), run.GetFailureMessage())
	}
	if n := w.portal.Counters().LoginsByUser["dave"]; n != 2 {
		t.Fatalf("dave logged in %d times, want 2 (create, then the Run's recreate)", n)
	}
	needles := encodings([][]byte{[]byte(canary)})
	if found := scanDir(t, filepath.Join(w.st.Config.DataDir, "nats"), needles); len(found) > 0 {
		t.Errorf("the runtime password is in JetStream store files: %v", found)
	}
	if strings.Contains(w.st.Logs.String(), canary) {
		t.Error("the runtime password is in the logs")
	}
}
