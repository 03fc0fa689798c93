package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
