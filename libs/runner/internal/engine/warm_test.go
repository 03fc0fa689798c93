package engine

import (
	"context"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// whoamiFile is a bundle file whose API reports what the context holds: the user the
// portal sees and the localStorage token.
var whoamiFile = recipe.File{Path: "whoami.yaml", Content: []byte(`
apis:
  whoami:
    steps:
      - request: { url: "{{ .Vars.baseURL }}/api/me", as: me }
      - evaluate: { script: "localStorage.getItem('portal_token')", as: token }
      - evaluate: { script: "document.cookie", as: visibleCookies }
`)}

// TestWarmContextServesOnlyItsSession runs a session's tasks back to back: the second
// reuses the warm context with no restore; another session's task never gets it.
func TestWarmContextServesOnlyItsSession(t *testing.T) {
	t.Parallel()
	_, base := portaltest.Start(t, portal.Config{DisableCookieRotation: true})
	b := newTestBackend(t, portalBundle(t, whoamiFile))
	for s, u := range map[string]portal.User{"sa": {Username: "alice", Password: portal.AlicePassword}, "sb": {Username: "bob", Password: portal.BobPassword, TOTPSecret: portal.BobTOTPSecret}} {
		b.vars[project+"/"+s] = map[string]string{"baseURL": base}
		b.putState(t, project, s, 1, loggedInState(t, base, u))
	}
	r := newTestRunner(t, Config{}, b, Deps{})
	run := func(session string) *runnerv1.TaskResult {
		tk := task(runnerv1.TaskKind_TASK_KIND_API, "whoami", project, session, 1, nil)
		tk.CheckFirst = true
		res := r.Execute(t.Context(), tk)
		if res.GetStatus() != statusSucceeded {
			t.Fatalf("whoami for %s: %s %s", session, res.GetStatus(), res.GetFailureMessage())
		}
		return res
	}
	first := run("sa")
	opens := len(b.opens)
	second := run("sa")
	other := run("sb")
	if first.GetWarmContext() || !second.GetWarmContext() || other.GetWarmContext() {
		t.Errorf("warm: first %v second %v other session %v; want false true false", first.GetWarmContext(), second.GetWarmContext(), other.GetWarmContext())
	}
	if len(b.opens) != opens+1 {
		t.Errorf("the warm task opened %d states; want none (the other session's one only)", len(b.opens)-opens-1)
	}
	for res, user := range map[*runnerv1.TaskResult]string{first: "alice", second: "alice", other: "bob"} {
		me := res.GetOutput().GetStructValue().GetFields()["me"].GetStructValue().GetFields()["username"].GetStringValue()
		if me != user {
			t.Errorf("%s saw %q, want %q", res.GetRunId(), me, user)
		}
	}
	if got := r.WarmContexts(); got != 2 {
		t.Errorf("%d warm contexts, want one per session", got)
	}
}

// TestSessionsIsolated runs two sessions at once on one browser: neither sees the
// other's cookies or localStorage.
func TestSessionsIsolated(t *testing.T) {
	t.Parallel()
	_, base := portaltest.Start(t, portal.Config{DisableCookieRotation: true})
	b := newTestBackend(t, portalBundle(t, whoamiFile))
	states := map[string]*latchkeyv1.StorageState{}
	for s, u := range map[string]portal.User{"sa": {Username: "alice", Password: portal.AlicePassword}, "sb": {Username: "bob", Password: portal.BobPassword, TOTPSecret: portal.BobTOTPSecret}} {
		b.vars[project+"/"+s] = map[string]string{"baseURL": base}
		states[s] = loggedInState(t, base, u)
		b.putState(t, project, s, 1, states[s])
	}
	r := newTestRunner(t, Config{Contexts: 2}, b, Deps{})
	var wg sync.WaitGroup
	results := map[string]*runnerv1.TaskResult{}
	var mu sync.Mutex
	for _, s := range []string{"sa", "sb"} {
		wg.Go(func() {
			res := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_API, "whoami", project, s, 1, nil))
			mu.Lock()
			results[s] = res
			mu.Unlock()
		})
	}
	wg.Wait()
	for s, other := range map[string]string{"sa": "sb", "sb": "sa"} {
		res := results[s]
		if res.GetStatus() != statusSucceeded {
			t.Fatalf("%s: %s %s", s, res.GetStatus(), res.GetFailureMessage())
		}
		out := res.GetOutput().GetStructValue().GetFields()
		token := out["token"].GetStringValue()
		if token != states[s].GetOrigins()[0].GetLocalStorage()[0].GetValue() {
			t.Errorf("%s sees another token in localStorage", s)
		}
		if strings.Contains(out["visibleCookies"].GetStringValue(), cookieValue(states[other], portal.SessionCookie)) {
			t.Errorf("%s sees %s's cookie", s, other)
		}
		st := b.openState(t, project, s, mustCapture(t, r, b, s))
		if cookieValue(st, portal.SessionCookie) != cookieValue(states[s], portal.SessionCookie) || len(st.GetCookies()) != 1 {
			t.Errorf("%s's context holds cookies %v, want only its own", s, names(st))
		}
	}
}

// mustCapture runs whoami again in the session's warm context with a changed
// localStorage, to force a captured state, and returns it.
func mustCapture(t *testing.T, r *Runner, b *testBackend, session string) []byte {
	t.Helper()
	tk := task(runnerv1.TaskKind_TASK_KIND_API, "touch", project, session, 1, nil)
	res := r.Execute(t.Context(), tk)
	if res.GetStatus() != statusSucceeded || len(res.GetCapturedStateCiphertext()) == 0 {
		t.Fatalf("touch for %s: %s %s, state %d bytes", session, res.GetStatus(), res.GetFailureMessage(), len(res.GetCapturedStateCiphertext()))
	}
	return res.GetCapturedStateCiphertext()
}

func names(st *latchkeyv1.StorageState) []string {
	var out []string
	for _, c := range st.GetCookies() {
		out = append(out, c.GetName()+"@"+c.GetDomain())
	}
	return out
}

// TestWarmContextRefreshedForNewerRevision: another runner wrote a newer revision;
// the warm context gets it before the task runs, in place.
func TestWarmContextRefreshedForNewerRevision(t *testing.T) {
	t.Parallel()
	_, base := portaltest.Start(t, portal.Config{DisableCookieRotation: true})
	b := newTestBackend(t, portalBundle(t, whoamiFile))
	b.vars[project+"/sa"] = map[string]string{"baseURL": base}
	st := loggedInState(t, base, portal.User{Username: "alice", Password: portal.AlicePassword})
	b.putState(t, project, "sa", 1, st)
	r := newTestRunner(t, Config{}, b, Deps{})
	if res := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_API, "whoami", project, "sa", 1, nil)); res.GetStatus() != statusSucceeded {
		t.Fatalf("first task: %s", res.GetFailureMessage())
	}
	newer := proto.Clone(st).(*latchkeyv1.StorageState)
	newer.Origins[0].LocalStorage[0].Value = "token-of-revision-2"
	b.putState(t, project, "sa", 2, newer)
	res := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_API, "whoami", project, "sa", 2, nil))
	if res.GetStatus() != statusSucceeded || !res.GetWarmContext() {
		t.Fatalf("second task: %s warm %v %s", res.GetStatus(), res.GetWarmContext(), res.GetFailureMessage())
	}
	if got := res.GetOutput().GetStructValue().GetFields()["token"].GetStringValue(); got != "token-of-revision-2" {
		t.Errorf("the warm context shows token %q, want revision 2's", got)
	}
	if res.GetBaseStateRevision() != 2 {
		t.Errorf("base revision %d, want 2", res.GetBaseStateRevision())
	}
}

func init() {
	whoamiFile.Content = append(whoamiFile.Content, []byte(`
  touch:
    steps:
      - evaluate: "localStorage.setItem('touched', String(Date.now())) || true"
`)...)
}

// TestWarmContextKnowsItsWriteBack: the scheduler stores the state a warm context
// captured as the next revision; the next task carrying that revision neither decrypts
// nor restores anything.
func TestWarmContextKnowsItsWriteBack(t *testing.T) {
	t.Parallel()
	_, base := portaltest.Start(t, portal.Config{})
	b := newTestBackend(t, portalBundle(t, whoamiFile))
	b.vars[project+"/sa"] = map[string]string{"baseURL": base}
	b.putState(t, project, "sa", 1, loggedInState(t, base, portal.User{Username: "alice", Password: portal.AlicePassword}))
	r := newTestRunner(t, Config{}, b, Deps{})
	first := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_API, "whoami", project, "sa", 1, nil))
	if first.GetStatus() != statusSucceeded || len(first.GetCapturedStateCiphertext()) == 0 {
		t.Fatalf("first task: %s %s (the portal rotates cookies: a state must come back)", first.GetStatus(), first.GetFailureMessage())
	}
	b.mu.Lock()
	b.states[project+"/sa"][2] = first.GetCapturedStateCiphertext()
	opens := len(b.opens)
	b.mu.Unlock()
	second := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_API, "whoami", project, "sa", 2, nil))
	if second.GetStatus() != statusSucceeded || !second.GetWarmContext() {
		t.Fatalf("second task: %s warm=%v %s", second.GetStatus(), second.GetWarmContext(), second.GetFailureMessage())
	}
	if len(b.opens) != opens {
		t.Errorf("the second task opened %v; want nothing: the context wrote revision 2 itself", b.opens[opens:])
	}
}

// TestVaultDown: a vault out of reach is a platform fault — the task comes back with
// platform_fault for the scheduler to send again — except after the API has run: then
// failing would run it twice, so the API's result stands and its new state is dropped
// with the context that held it.
func TestVaultDown(t *testing.T) {
	t.Parallel()
	_, base := portaltest.Start(t, portal.Config{}) // cookies rotate: every task changes the state
	b := newTestBackend(t, portalBundle(t, whoamiFile))
	b.vars[project+"/s1"] = map[string]string{"baseURL": base}
	b.putState(t, project, "s1", 1, loggedInState(t, base, portal.User{Username: "alice", Password: portal.AlicePassword}))
	r := newTestRunner(t, Config{}, b, Deps{})
	whoami := func() *runnerv1.TaskResult {
		tk := task(runnerv1.TaskKind_TASK_KIND_API, "whoami", project, "s1", 1, nil)
		tk.CheckFirst = true
		return r.Execute(t.Context(), tk)
	}

	b.openDown.Store(true) // the restore fails: nothing ran at the site
	if res := whoami(); res.GetStatus() != statusFailed || !res.GetPlatformFault() || res.GetFailureReason() != reasonTransient {
		t.Fatalf("with the vault down: %s %s platform_fault=%v (%s), want FAILED TRANSIENT as a platform fault",
			res.GetStatus(), res.GetFailureReason(), res.GetPlatformFault(), res.GetFailureMessage())
	}

	b.openDown.Store(false)
	b.sealDown.Store(true) // the restore works, the API runs, sealing its new state fails
	res := whoami()
	if res.GetStatus() != statusSucceeded || res.GetPlatformFault() || len(res.GetCapturedStateCiphertext()) != 0 {
		t.Fatalf("vault lost after the API: %s platform_fault=%v state=%d bytes, want SUCCEEDED without a state",
			res.GetStatus(), res.GetPlatformFault(), len(res.GetCapturedStateCiphertext()))
	}
	if me := res.GetOutput().GetStructValue().GetFields()["me"].GetStructValue().GetFields()["username"].GetStringValue(); me != "alice" {
		t.Errorf("output says %q, want alice", me)
	}
	if n := r.WarmContexts(); n != 0 {
		t.Errorf("%d warm contexts kept, want the unsaved one closed", n)
	}
}

// meetFile has two APIs that end only when both run at the same moment in tabs that
// share their storage: a BroadcastChannel reaches only the same origin's documents in
// the same browser context, so tasks in separate jars would wait out their deadline.
var meetFile = recipe.File{Path: "meet.yaml", Content: []byte(`
apis:
  wait-for-peer:
    steps:
      - goto: "{{ .Vars.baseURL }}/invoices"
      - evaluate:
          as: met
          script: |
            new Promise(done => {
              const ch = new BroadcastChannel("latchkey-meet");
              ch.onmessage = ev => { if (ev.data === "hello") { ch.postMessage("ack"); done(true) } };
            })
  greet-peer:
    steps:
      - goto: "{{ .Vars.baseURL }}/invoices"
      - evaluate:
          as: met
          script: |
            new Promise(done => {
              const ch = new BroadcastChannel("latchkey-meet");
              const t = setInterval(() => ch.postMessage("hello"), 20);
              ch.onmessage = ev => { if (ev.data === "ack") { clearInterval(t); done(true) } };
            })
`)}

// writingBackend lets the runner write states back itself, with compare-and-swap on
// the revision as the registry does, and counts the conflicts.
type writingBackend struct {
	*testBackend
	conflicts int
}

func (w *writingBackend) PutStorageState(_ context.Context, project, session string, sealed []byte, base int64) (int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	revs := w.states[project+"/"+session]
	newest := int64(0)
	for r := range revs {
		newest = max(newest, r)
	}
	if newest != base {
		w.conflicts++
		return 0, sdk.ErrStateConflict
	}
	revs[base+1] = sealed
	return base + 1, nil
}

// newest is the session's newest revision, the one the scheduler sends tasks with.
func (w *writingBackend) newest(session string) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := int64(0)
	for r := range w.states[project+"/"+session] {
		n = max(n, r)
	}
	return n
}

// TestConcurrentTasksShareTheSessionsJar runs two tasks of one session at once on a
// runner that holds one warm tab of it: the second opens a tab in the same browser
// context (they meet through a BroadcastChannel, which separate contexts cannot do),
// neither decrypts nor restores the stored state, their write-backs never conflict,
// and the next tasks find the jar holding the newest revision.
func TestConcurrentTasksShareTheSessionsJar(t *testing.T) {
	t.Parallel()
	_, base := portaltest.Start(t, portal.Config{}) // the session cookie rotates on every request
	b := newTestBackend(t, portalBundle(t, whoamiFile, meetFile))
	w := &writingBackend{testBackend: b}
	b.vars[project+"/sa"] = map[string]string{"baseURL": base}
	b.putState(t, project, "sa", 1, loggedInState(t, base, portal.User{Username: "alice", Password: portal.AlicePassword}))
	r := newTestRunner(t, Config{Contexts: 2}, nil, Deps{States: w, Vault: b, Bundles: b})
	if res := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_API, "whoami", project, "sa", 1, nil)); res.GetStatus() != statusSucceeded {
		t.Fatalf("warm-up: %s %s", res.GetStatus(), res.GetFailureMessage())
	}
	b.mu.Lock()
	opens := len(b.opens)
	b.mu.Unlock()

	results := make([]*runnerv1.TaskResult, 2)
	var wg sync.WaitGroup
	rev := w.newest("sa")
	for i, api := range []string{"wait-for-peer", "greet-peer"} {
		wg.Go(func() {
			tk := task(runnerv1.TaskKind_TASK_KIND_API, api, project, "sa", rev, nil)
			tk.CheckFirst = true
			results[i] = r.Execute(t.Context(), tk)
		})
	}
	wg.Wait()
	for _, res := range results {
		if res.GetStatus() != statusSucceeded || !res.GetWarmContext() {
			t.Fatalf("%s: %s warm=%v %s", res.GetRunId(), res.GetStatus(), res.GetWarmContext(), res.GetFailureMessage())
		}
	}
	// Both tabs are warm now; two more tasks at once take them, still with no restore.
	rev = w.newest("sa")
	for range 2 {
		wg.Go(func() {
			res := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_API, "whoami", project, "sa", rev, nil))
			if me := res.GetOutput().GetStructValue().GetFields()["me"].GetStructValue().GetFields()["username"].GetStringValue(); res.GetStatus() != statusSucceeded || me != "alice" {
				t.Errorf("whoami after: %s, user %q: %s", res.GetStatus(), me, res.GetFailureMessage())
			}
		})
	}
	wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.opens) != opens {
		t.Errorf("the concurrent tasks opened %v; want nothing: they share the warm jar's cookies", b.opens[opens:])
	}
	if w.conflicts != 0 {
		t.Errorf("%d write-back conflicts; want none: one jar writes its revisions in turn", w.conflicts)
	}
	if n := r.WarmContexts(); n != 2 {
		t.Errorf("%d warm tabs, want the two that ran at once", n)
	}
}

// TestLoginAndItsVerificationLeaveOneJar: a login's context and the fresh context that
// verifies the state it captured are two jars of one session; only the newer stays
// warm, so the session's next Runs share one cookie jar instead of two that keep
// restoring each other's write-backs.
func TestLoginAndItsVerificationLeaveOneJar(t *testing.T) {
	t.Parallel()
	_, base := portaltest.Start(t, portal.Config{})
	b := newTestBackend(t, portalBundle(t, whoamiFile))
	b.vars[project+"/sl"] = map[string]string{"baseURL": base}
	b.secrets[project+"/session-sl"] = map[string]string{"username": "alice", "password": portal.AlicePassword}
	r := newTestRunner(t, Config{Contexts: 2}, b, Deps{})
	create := task(runnerv1.TaskKind_TASK_KIND_CREATE, recipe.CreateAPI, project, "sl", 0, nil)
	create.Credentials = &runnerv1.CredentialsRef{Source: &runnerv1.CredentialsRef_SecretId{SecretId: "session-sl"}}
	res := r.Execute(t.Context(), create)
	if res.GetStatus() != statusSucceeded || len(res.GetCapturedStateCiphertext()) == 0 {
		t.Fatalf("login: %s %s", res.GetStatus(), res.GetFailureMessage())
	}
	verify := task(runnerv1.TaskKind_TASK_KIND_CHECK, recipe.CheckAPI, project, "sl", 0, nil)
	verify.FreshContext, verify.CandidateStateCiphertext = true, res.GetCapturedStateCiphertext()
	if res := r.Execute(t.Context(), verify); res.GetStatus() != statusSucceeded || res.GetCheckOutcome() != outcomeValid || res.GetWarmContext() {
		t.Fatalf("verification: %s %s warm=%v %s", res.GetStatus(), res.GetCheckOutcome(), res.GetWarmContext(), res.GetFailureMessage())
	}
	if n := r.WarmContexts(); n != 1 {
		t.Errorf("%d warm contexts after the login and its verification, want 1", n)
	}
}
