package orch

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/libs/cache"
	"github.com/latchkey/latchkey/libs/domain"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
)

// TestRuntimeCredentialsAreNeverStoredDurably: "RUNTIME sessions recreate with the
// credentials passed in that Run; those credentials are never written anywhere
// durable" — Start seals them through the vault, the sealed copy lives only in the
// cache (never in any revision of any LK_RUNS record), the CREATE task carries it by
// value, and it is forgotten when the Run ends.
func TestRuntimeCredentialsAreNeverStoredDurably(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.add(sessID, typeRuntime, sessReady)
	req := apiRequest(nil)
	req.Credentials = map[string]string{"username": "ada", "password": "hunter2-secret"}
	run := h.start(req)

	sealed := sealedFor(domain.KindRuntimeCredentials, run.GetId())
	enc := h.vault.encryptCalls()
	if len(enc) != 1 || enc[0].GetContext().GetKind() != domain.KindRuntimeCredentials || enc[0].GetContext().GetId() != run.GetId() ||
		enc[0].GetContext().GetProjectId() != testProject || !bytes.Contains(enc[0].GetPlaintext(), []byte("hunter2-secret")) {
		t.Fatalf("vault encrypts %v, want the credentials sealed for (acme, runtime_credentials, %s)", enc, run.GetId())
	}
	if got, err := h.cache.Get(t.Context(), runtimeCredsKey(run.GetId())); err != nil || !bytes.Equal(got, sealed) {
		t.Fatalf("cached credentials %q, %v; want the sealed copy", got, err)
	}
	notInKV := func(when string) {
		t.Helper()
		for _, v := range h.rawRunValues() {
			if bytes.Contains(v, sealed) || bytes.Contains(v, []byte("hunter2-secret")) {
				t.Fatalf("%s: a Run record in LK_RUNS holds the runtime credentials: %q", when, v)
			}
		}
	}
	notInKV("after Start")

	api := h.takeTask(taskAPI)
	if !bytes.Equal(api.GetCredentials().GetCiphertext(), sealed) {
		t.Fatalf("API task credentials %v, want the sealed copy", api.GetCredentials())
	}
	h.mustHandle(result(api, statusNeedsAuth))
	create := h.takeTask(taskCreate)
	if !bytes.Equal(create.GetCredentials().GetCiphertext(), sealed) || create.GetCredentials().GetCiphertextRunId() != run.GetId() {
		t.Fatalf("create task credentials %v, want the API Run's sealed credentials", create.GetCredentials())
	}
	notInKV("while logging in")

	h.mustHandle(loggedIn(create))
	h.mustHandle(checked(h.takeTask(taskCheck), valid))
	h.wantSession(sessID, sessReady, noReason)
	h.mustHandle(result(h.takeTask(taskAPI), statusSucceeded))
	h.wantRun(run.GetId(), runSucceeded, noReason)
	if _, err := h.cache.Get(t.Context(), runtimeCredsKey(run.GetId())); !errors.Is(err, cache.ErrMiss) {
		t.Errorf("the credentials are still cached after the Run ended: %v", err)
	}
	notInKV("after the Run")
}

// TestRuntimeSessionWithoutCredentialsCannotLogIn: a Run that brought no credentials
// to a RUNTIME session that needs a login is CANCELED; nothing logs in, and the
// session waits for a Run that brings some.
func TestRuntimeSessionWithoutCredentialsCannotLogIn(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.add(sessID, typeRuntime, sessReady)
	run, _ := h.startFailingCheck(nil)
	rec := h.wantRun(run.GetId(), runCanceled, reasonExpired)
	if !strings.Contains(rec.GetRun().GetFailureMessage(), "credentials") {
		t.Errorf("failure message %q does not say credentials were missing", rec.GetRun().GetFailureMessage())
	}
	h.noTasks()
	if n := h.reg.transitionsTo(sessRecreating); n != 0 {
		t.Errorf("%d recreate transitions without credentials", n)
	}
	if holder := h.leaseHolder(sessID); holder != "" {
		t.Errorf("lease taken by %q", holder)
	}
	h.wantSession(sessID, sessReady, noReason)
}

// TestCredentialsUpdate: "Updating credentials runs AUTHSESSION_UPDATE (create with
// the new credentials, then check); only on success do the new credentials and state
// replace the old ones" — the login uses the pending secret; the registry is told
// to promote it (succeeded) or discard it, and a failed update does not expire the
// session.
func TestCredentialsUpdate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		from      latchkeyv1.SessionState
		fail      func(h *harness) // nil: the login and its check succeed
		wantRun   latchkeyv1.RunState
		wantWhy   latchkeyv1.FailureReason
		wantState latchkeyv1.SessionState
	}{
		{"a READY session, new credentials work", sessReady, nil, runSucceeded, noReason, sessReady},
		{"an EXPIRED session is revived", sessExpired, nil, runSucceeded, noReason, sessReady},
		{"a READY session, new credentials rejected", sessReady, func(h *harness) {
			h.mustHandle(failed(h.takeTask(taskCreate), reasonBadPassword))
		}, runFailed, reasonBadPassword, sessReady},
		{"an EXPIRED session, new credentials rejected", sessExpired, func(h *harness) {
			h.mustHandle(failed(h.takeTask(taskCreate), reasonBadPassword))
		}, runFailed, reasonBadPassword, sessExpired},
		{"a READY session, the new state fails its check", sessReady, func(h *harness) {
			h.mustHandle(loggedIn(h.takeTask(taskCreate)))
			h.mustHandle(checked(h.takeTask(taskCheck), invalidState))
		}, runFailed, reasonTransient, sessReady},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.reg.add(sessID, typeCredentials, tc.from)
			before := h.reg.get(sessID)
			run := h.startInternal(&latchkeyv1.StartRunRequest{
				Kind: latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE, Api: recipe.CreateAPI, AuthSessionId: sessID,
			})
			if tc.fail == nil {
				create := h.login()
				if got := create.GetCredentials().GetSecretId(); got != domain.PendingCredentialsSecret(sessID) {
					t.Fatalf("update logged in with secret %q, want %q", got, domain.PendingCredentialsSecret(sessID))
				}
			} else {
				tc.fail(h)
			}
			h.noTasks()
			h.wantRun(run.GetId(), tc.wantRun, tc.wantWhy)
			sess := h.reg.get(sessID)
			succeeded := tc.wantRun == runSucceeded
			if sess.GetState() != tc.wantState {
				t.Errorf("session is %s, want %s", sess.GetState(), tc.wantState)
			}
			if !succeeded && (sess.GetStateReason() != before.GetStateReason() || sess.GetStateRevision() != before.GetStateRevision()) {
				t.Errorf("a failed update changed the session: %v, was %v", sess, before)
			}
			if succeeded && sess.GetStateRevision() != 2 {
				t.Errorf("session revision %d, want the update's state as revision 2", sess.GetStateRevision())
			}
			if n := h.reg.transitionsTo(sessExpired); n != 0 {
				t.Errorf("the update expired the session (%d transitions)", n)
			}
			done := h.reg.completeCalls()
			if len(done) != 1 || done[0].GetRunId() != run.GetId() || done[0].GetAuthSessionId() != sessID || done[0].GetSucceeded() != succeeded {
				t.Fatalf("CompleteCredentialsUpdate calls %v, want one for %s with succeeded=%v", done, run.GetId(), succeeded)
			}
		})
	}
}

// TestWriteBack: "After each successful Run the state captured from the browser is
// written back when it changed, with compare-and-swap on the revision" — the put's
// base is the revision the task restored; when another Run wrote first the newer
// revision is kept and the loss is logged, not an error.
func TestWriteBack(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		captured   string
		otherFirst bool   // another Run writes revision 2 before this result arrives
		wantState  string // revision 2's content afterwards; "" means no revision 2
	}{
		{"a captured state becomes the next revision", "rotated-cookies", false, "rotated-cookies"},
		{"a newer revision wins", "rotated-cookies", true, "other-run"},
		{"nothing captured, nothing written", "", false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.reg.add(sessID, typeCredentials, sessReady)
			run := h.start(apiRequest(nil))
			task := h.takeTask(taskAPI)
			if tc.otherFirst {
				if _, err := h.reg.PutStorageState(t.Context(), putRequest("other-run", 1)); err != nil {
					t.Fatal(err)
				}
			}
			res := result(task, statusSucceeded)
			res.CapturedStateCiphertext = []byte(tc.captured)
			h.mustHandle(res)
			h.wantRun(run.GetId(), runSucceeded, noReason)

			var ours []putCall
			for _, p := range h.reg.putCalls() {
				if string(p.req.GetCiphertext()) == tc.captured {
					ours = append(ours, p)
				}
			}
			switch {
			case tc.captured == "" && len(ours) != 0:
				t.Fatalf("puts %v without a captured state", ours)
			case tc.captured != "" && (len(ours) != 1 || ours[0].req.GetBaseRevision() != task.GetSession().GetStateRevision() || ours[0].req.GetKnownGood()):
				t.Fatalf("puts %v, want one on base revision %d", ours, task.GetSession().GetStateRevision())
			}
			if got := string(h.reg.state(sessID, 2)); got != tc.wantState {
				t.Errorf("revision 2 holds %q, want %q", got, tc.wantState)
			}
			if lost := strings.Contains(h.logs.String(), "state write-back lost to a newer revision"); lost != tc.otherFirst {
				t.Errorf("the lost write-back logged: %v, want %v", lost, tc.otherFirst)
			}
			h.wantSession(sessID, sessReady, noReason)
		})
	}
}
