package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	"github.com/latchkey/latchkey/libs/config"
	"github.com/latchkey/latchkey/libs/testkit"
)

// TestTry logs in to the demo portal with `latchkey try`, saves the state, and lists
// the invoices with it; a broken bundle fails naming file, API, step and field.
func TestTry(t *testing.T) {
	_, base := portaltest.Start(t, portal.Config{})
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds.json")
	state := filepath.Join(dir, "state.json")
	b, _ := json.Marshal(map[string]string{"username": "bob", "password": portal.BobPassword, "totp_secret": portal.BobTOTPSecret})
	if err := os.WriteFile(creds, b, 0o600); err != nil {
		t.Fatal(err)
	}
	env := config.MapEnv(map[string]string{"LATCHKEY_CHROMIUM_PATH": testkit.ChromiumPath(t)})
	bundle := filepath.Join("..", "..", "examples", "portal", "automations")
	vars := `{"baseURL":"` + base + `"}`
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"try", "auth-sessions/create", "--bundle", bundle, "--credentials", creds, "--vars", vars, "--save-state", state}, env, &out, &errOut); err != nil {
		t.Fatalf("try create: %v\n%s%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{" 7 totp \"totp code\" (", "skip 13 ask", "ok   16 expectVisible #user-menu", "state saved to"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("create output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), portal.BobPassword) {
		t.Error("the password was printed")
	}
	if st, err := os.Stat(state); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", st, err)
	}
	out.Reset()
	if err := run(t.Context(), []string{"try", "list-invoices", "--bundle", bundle, "--state", state, "--vars", vars}, env, &out, &errOut); err != nil {
		t.Fatalf("try list-invoices: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), `"account": "bob"`) || !strings.Contains(out.String(), "INV-BOB-1001") {
		t.Errorf("list-invoices output:\n%s", out.String())
	}

	broken := t.TempDir()
	if err := os.WriteFile(filepath.Join(broken, "x.yaml"), []byte("apis:\n  a:\n    steps:\n      - click: { selectr: '#x' }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run(t.Context(), []string{"try", "a", "--bundle", broken}, env, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "x.yaml:4: api a: step 0 (click): field selectr") {
		t.Errorf("broken bundle: %v", err)
	}
}

// TestTryShowsWhatTheNewStepsFound: latchkey try prints under each step what it found:
// the navigation a click waited for (past the portal's login banner), the TOTP time
// step and the wait for an unused one, the retry after the portal refused a code,
// and for a request check the answer and the rule that decided.
func TestTryShowsWhatTheNewStepsFound(t *testing.T) {
	p, base := portaltest.Start(t, portal.Config{LoginBanner: "Maintenance on Sunday"})
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds.json")
	state := filepath.Join(dir, "state.json")
	b, _ := json.Marshal(map[string]string{"username": portal.ErinUsername, "password": portal.ErinPassword, "totp_secret": portal.ErinTOTPSecret})
	if err := os.WriteFile(creds, b, 0o600); err != nil {
		t.Fatal(err)
	}
	env := config.MapEnv(map[string]string{"LATCHKEY_CHROMIUM_PATH": testkit.ChromiumPath(t)})
	vars := `{"baseURL":"` + base + `"}`
	// Erin's codes work once, and she has just used this step's code elsewhere (with
	// a few seconds of the step left, so Latchkey's first code is of the same step).
	testkit.FreshTOTPStep(t, 8*time.Second)
	portaltest.Login(t, base, portal.User{Username: portal.ErinUsername, Password: portal.ErinPassword, TOTPSecret: portal.ErinTOTPSecret})

	var out, errOut bytes.Buffer
	bundle, err := filepath.Abs(filepath.Join("..", "..", "examples", "portal", "automations"))
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir) // try saves the screenshots of failed steps in the current folder
	if err := run(t.Context(), []string{"try", "auth-sessions/create", "--bundle", bundle, "--credentials", creds, "--vars", vars, "--save-state", state}, env, &out, &errOut); err != nil {
		t.Fatalf("try create: %v\n%s%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{
		"ok    3 click #login-button (", "       navigated (committed after",
		`ok    7 totp "totp code" (`, "       time step ",
		"ok   11 retry (", `       going back to step 7 ("totp code")`,
		"(the current one was used: waited",
		"skip 11 retry",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("create output lacks %q:\n%s", want, out.String())
		}
	}

	checks := t.TempDir()
	if err := os.WriteFile(filepath.Join(checks, "checks.yaml"), []byte(`apis:
  auth-sessions/check:
    steps:
      - request: { url: "{{ .Vars.baseURL }}/account", invalidIf: { redirectTo: /login } }
  whoami:
    steps:
      - request: { url: "{{ .Vars.baseURL }}/api/whoami", invalidIf: { json: { path: error.code, equals: denied } } }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tryCheck := func(api string) (string, error) {
		t.Helper()
		out.Reset()
		err := run(t.Context(), []string{"try", api, "--bundle", checks, "--state", state, "--vars", vars}, env, &out, &errOut)
		return out.String(), err
	}
	got, err := tryCheck("auth-sessions/check")
	if err != nil || !strings.Contains(got, "       answered 200; no invalidIf rule matched") || !strings.Contains(got, "check: VALID") {
		t.Errorf("check while logged in: %v\n%s", err, got)
	}
	p.ExpireSessions()
	got, err = tryCheck("auth-sessions/check")
	if err == nil || !strings.Contains(got, "FAIL  0 request (") || !strings.Contains(got, "       answered 200 after a redirect; invalidIf.redirectTo matched") ||
		!strings.Contains(got, "check: INVALID") || !strings.Contains(err.Error(), "invalidIf.redirectTo matched") {
		t.Errorf("check after the portal dropped the session: %v\n%s", err, got)
	}
	got, err = tryCheck("whoami")
	if err == nil || !strings.Contains(got, "       answered 200; invalidIf.json (error.code equals) matched") ||
		!strings.Contains(err.Error(), "invalidIf.json (error.code equals) matched: the state is not logged in") {
		t.Errorf("whoami after the portal dropped the session: %v\n%s", err, got)
	}
	if strings.Contains(out.String()+errOut.String(), "Sign in to continue") {
		t.Error("try printed the site's answer")
	}
	if _, err := os.Stat(filepath.Join(dir, "try-try-failed-step-0.png")); err != nil {
		t.Errorf("no screenshot of the failed check: %v", err)
	}
}
