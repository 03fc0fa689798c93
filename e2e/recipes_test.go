package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/testkit"
)

// Recipes for the patterns of real sites (issue 14), through the whole stack.

// portalCheck is the portal bundle's check step, which the tests below replace.
const portalCheck = `      - request: { url: "{{ .Vars.baseURL }}/api/me", expectStatus: 200, invalidStatus: [401, 403] }`

// bundleWith returns the portal's bundle with its create and check APIs edited.
func bundleWith(t *testing.T, edit func(authSessions string) string) []*latchkeyv1.BundleFile {
	t.Helper()
	var files []*latchkeyv1.BundleFile
	for _, name := range []string{"auth-sessions.yaml", "invoices.yaml"} {
		b, err := os.ReadFile("../examples/portal/automations/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if name == "auth-sessions.yaml" {
			edited := edit(string(b))
			if edited == string(b) {
				t.Fatal("the edit changed nothing: has the portal bundle changed?")
			}
			b = []byte(edited)
		}
		files = append(files, &latchkeyv1.BundleFile{Path: name, Content: b})
	}
	return files
}

// inProject returns w as seen by a new project of its stack, with files deployed.
func (w *world) inProject(t *testing.T, id string, files []*latchkeyv1.BundleFile) *world {
	t.Helper()
	created, err := latchkeyv1.NewProjectServiceClient(w.st.Dial(t, w.st.AdminKey)).CreateProject(t.Context(), &latchkeyv1.CreateProjectRequest{ProjectId: id, DisplayName: id})
	if err != nil {
		t.Fatalf("CreateProject %s: %v", id, err)
	}
	pw := *w
	pw.apiKey = created.GetApiKeySecret()
	pw.conn = w.st.Dial(t, pw.apiKey)
	pw.runs, pw.sessions = latchkeyv1.NewRunServiceClient(pw.conn), latchkeyv1.NewAuthSessionServiceClient(pw.conn)
	if _, err := latchkeyv1.NewAutomationServiceClient(pw.conn).DeployBundle(t.Context(), &latchkeyv1.DeployBundleRequest{Files: files}); err != nil {
		t.Fatalf("DeployBundle in %s: %v", id, err)
	}
	return &pw
}

// TestRequestCheckRulesKeepSessionsLoggedIn: a cheap request check with each new rule,
// against the portal's logged-out patterns (/account answers 302 to the login page,
// /api/whoami 200 with an error body), keeps a session READY through Runs without a
// login, and, once the portal dropped every session, finds it INVALID and logs in
// exactly once. One project per rule, each with a user of its own, on one stack.
func TestRequestCheckRulesKeepSessionsLoggedIn(t *testing.T) {
	t.Parallel()
	rules := []struct{ name, request string }{
		{"redirect-to", `{ url: "{{ .Vars.baseURL }}/account", invalidIf: { redirectTo: /login } }`},
		{"redirected", `{ url: "{{ .Vars.baseURL }}/account", redirect: manual, invalidIf: { redirected: true } }`},
		{"body-contains", `{ url: "{{ .Vars.baseURL }}/account", invalidIf: { bodyContains: 'id="login-form"' } }`},
		{"body-not-contains", `{ url: "{{ .Vars.baseURL }}/account", invalidIf: { bodyNotContains: 'id="account-username"' } }`},
		{"json-equals", `{ url: "{{ .Vars.baseURL }}/api/whoami", invalidIf: { json: { path: error.code, equals: denied } } }`},
		{"json-missing", `{ url: "{{ .Vars.baseURL }}/api/whoami", invalidIf: { json: { path: user.username, missing: true } } }`},
	}
	users := portal.DefaultUsers()
	for _, r := range rules {
		users = append(users, portal.User{Username: r.name, Password: "pw-" + r.name})
	}
	w := newWorldWith(t, portal.Config{Users: users}, stacktest.Options{})
	sites := make([]*world, len(rules))
	sessions := make([]string, len(rules))
	for i, r := range rules {
		files := bundleWith(t, func(s string) string {
			return strings.Replace(s, portalCheck, "      - request: "+r.request, 1)
		})
		sites[i] = w.inProject(t, "rule-"+r.name, files)
		sess, runID := sites[i].createSession(t, latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, map[string]string{"username": r.name, "password": "pw-" + r.name})
		if run := sites[i].wait(t, runID); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			t.Fatalf("%s: create = %s %s", r.name, run.GetState(), run.GetFailureMessage())
		}
		sessions[i] = sess.GetId()
	}
	runInvoices := func(phase string) {
		t.Helper()
		for i, r := range rules {
			run := sites[i].wait(t, sites[i].start(t, "list-invoices", sessions[i], nil).GetId())
			if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED || len(invoicesOf(run)) != 5 {
				t.Errorf("%s, %s: list-invoices = %s %s: %s", r.name, phase, run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
			}
		}
	}
	runInvoices("logged in")
	runInvoices("logged in, again")
	for _, r := range rules {
		if n := w.portal.Counters().LoginsByUser[r.name]; n != 1 {
			t.Errorf("%s: %d logins while the session was valid, want the create's 1", r.name, n)
		}
	}
	w.portal.ExpireSessions()
	runInvoices("after the portal dropped every session")
	for i, r := range rules {
		if n := w.portal.Counters().LoginsByUser[r.name]; n != 2 {
			t.Errorf("%s: %d logins, want 2: the check must find the dropped session INVALID and log in once", r.name, n)
		}
		if s := sites[i].session(t, sessions[i]); s.GetState() != latchkeyv1.SessionState_SESSION_STATE_READY {
			t.Errorf("%s: session %s after the login", r.name, s.GetState())
		}
	}
}

// TestLoginPastABanner: with an alert always on the portal's login page, a recipe that
// looks for [role=alert] after clicking submit (as one written for a real site does)
// logs in, because the click waits for the page it starts; a wrong password is still
// told apart.
func TestLoginPastABanner(t *testing.T) {
	t.Parallel()
	w := newWorldWith(t, portal.Config{LoginBanner: "Maintenance on Sunday"}, stacktest.Options{})
	login := `  auth-sessions/create:
    steps:
      - goto: "{{ .Vars.baseURL }}/login"
      - fill: { selector: "#username", value: "{{ .Credentials.username }}" }
      - fill: { selector: "#password", value: "{{ .Credentials.password }}" }
      - click: "#login-button"
      - waitVisible: "#user-menu, [role=alert]"
      - fail: { reason: INVALID_CREDENTIALS, message: "the site shows an alert", when: "[role=alert]" }
      - expectVisible: "#user-menu"

  auth-sessions/check:`
	site := w.inProject(t, "banner", bundleWith(t, func(s string) string {
		i, j := strings.Index(s, "  auth-sessions/create:"), strings.Index(s, "  auth-sessions/check:")
		return s[:i] + login + s[j+len("  auth-sessions/check:"):]
	}))
	sess, runID := site.createSession(t, latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, alice())
	if run := site.wait(t, runID); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("create past the banner = %s %s: %s", run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
	}
	if run := site.wait(t, site.start(t, "list-invoices", sess.GetId(), nil).GetId()); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("list-invoices = %s: %s", run.GetState(), run.GetFailureMessage())
	}
	_, wrongID := site.createSession(t, latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, map[string]string{"username": portal.AliceUsername, "password": "wrong"})
	if run := site.wait(t, wrongID); run.GetState() != latchkeyv1.RunState_RUN_STATE_FAILED || run.GetFailureReason() != latchkeyv1.FailureReason_FAILURE_REASON_INVALID_CREDENTIALS {
		t.Errorf("create with a wrong password = %s %s, want FAILED INVALID_CREDENTIALS", run.GetState(), run.GetFailureReason())
	}
	if c := w.portal.Counters(); c.LoginsByUser[portal.AliceUsername] != 1 || c.FailedLogins != 1 {
		t.Errorf("portal counted %d logins and %d failures, want 1 and 1", c.LoginsByUser[portal.AliceUsername], c.FailedLogins)
	}
}

// TestSingleUseTOTPTwoLoginsInOneStep: erin's TOTP codes work once. Her session logs
// in, the portal drops it, and the next Run's login starts within the same 30 s time
// step: it waits for the next step (LK_TOTP says this one was used) and succeeds, so
// the portal counts exactly 2 logins and no refused code.
func TestSingleUseTOTPTwoLoginsInOneStep(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	// Room in this step for the first login and the start of the second.
	step := testkit.FreshTOTPStep(t, 20*time.Second)
	sess, runID := w.createSession(t, latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, map[string]string{
		"username": portal.ErinUsername, "password": portal.ErinPassword, "totp_secret": portal.ErinTOTPSecret,
	})
	if run := w.wait(t, runID); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("first login = %s %s: %s", run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
	}
	w.portal.ExpireSessions()
	if now := time.Now().Unix() / 30; now != step {
		t.Skipf("the first login took past its time step (%d s); the machine is too slow for this test", time.Now().Unix()%30)
	}
	start := time.Now()
	run := w.wait(t, w.start(t, "list-invoices", sess.GetId(), nil).GetId())
	if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("run after the portal dropped the session = %s %s: %s\nlogs:\n%s", run.GetState(), run.GetFailureReason(), run.GetFailureMessage(), tail(w.st.Logs.String()))
	}
	t.Logf("the Run with the second login took %s", time.Since(start).Round(time.Millisecond))
	c := w.portal.Counters()
	if c.LoginsByUser[portal.ErinUsername] != 2 || c.FailedLogins != 0 {
		t.Errorf("portal counted %d logins of erin and %d refused codes, want exactly 2 and 0", c.LoginsByUser[portal.ErinUsername], c.FailedLogins)
	}
	if s := w.session(t, sess.GetId()); s.GetState() != latchkeyv1.SessionState_SESSION_STATE_READY {
		t.Errorf("session %s after the second login", s.GetState())
	}
	if strings.Contains(w.st.Logs.String(), portal.ErinTOTPSecret) {
		t.Error("the TOTP secret appears in the logs")
	}
}

// TestLoginStoresTheStateItsVerificationLeft: a site that rotates its session cookie
// on every request and refuses a replaced value at once. The fresh-context check that
// verifies a login's state rotates the cookie; the session must keep the rotated one,
// so the first Run after the login needs no second login.
func TestLoginStoresTheStateItsVerificationLeft(t *testing.T) {
	t.Parallel()
	w := newWorldWith(t, portal.Config{RotationGrace: time.Nanosecond}, stacktest.Options{})
	sess := w.readySession(t)
	for range 2 {
		if run := w.wait(t, w.start(t, "list-invoices", sess.GetId(), nil).GetId()); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			t.Fatalf("run = %s %s", run.GetState(), run.GetFailureMessage())
		}
	}
	if n := w.portal.Counters().Logins; n != 1 {
		t.Errorf("%d logins, want 1: the Runs found the state the login's verification rotated", n)
	}
}
