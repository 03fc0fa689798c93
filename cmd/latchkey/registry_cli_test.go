package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/libs/config"
	"github.com/latchkey/latchkey/libs/testkit"
)

// TestDevLeavesAWorkingAPIKey: `latchkey dev` creates the default project on first
// start and leaves its key in the data dir (0600), so the CLI works with no set-up;
// a restart keeps the key.
func TestDevLeavesAWorkingAPIKey(t *testing.T) {
	dataDir := t.TempDir()
	p := start(t, nil, devArgs(dataDir)...)
	addr := p.waitFor(t, upRE)[1]
	path := filepath.Join(dataDir, DevAPIKeyFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, %v; want mode 0600", path, fi, err)
	}
	first, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(first), "lk_") {
		t.Fatalf("dev key %.3q... is not an API key", first)
	}
	out, err := cliRun(t, dataDir, "projects", "-addr", addr, "keys", "list")
	if err != nil || !strings.Contains(out, "default") {
		t.Fatalf("keys list with the dev key: %v\n%s", err, out)
	}
	if strings.Contains(p.stderr.String(), strings.TrimSpace(string(first))) {
		t.Error("the dev API key was logged")
	}
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}

	p = start(t, nil, devArgs(dataDir)...)
	addr = p.waitFor(t, upRE)[1]
	second, _ := os.ReadFile(path)
	if string(first) != string(second) {
		t.Error("the dev API key changed across restarts")
	}
	if _, err := cliRun(t, dataDir, "projects", "-addr", addr, "keys", "list"); err != nil {
		t.Fatalf("the dev key stopped working after a restart: %v", err)
	}
}

// TestRegistryCLI drives projects, automations, sessions and audit through the CLI
// against `latchkey dev`, in tables and JSON, and checks its refusals are actionable.
func TestRegistryCLI(t *testing.T) {
	dataDir := t.TempDir()
	p := start(t, nil, devArgs(dataDir)...)
	addr := p.waitFor(t, upRE)[1]
	run := func(args ...string) string {
		t.Helper()
		out, err := cliRun(t, dataDir, append([]string{args[0], "-addr", addr}, args[1:]...)...)
		if err != nil {
			t.Fatalf("latchkey %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	fails := func(want string, args ...string) {
		t.Helper()
		out, err := cliRun(t, dataDir, append([]string{args[0], "-addr", addr}, args[1:]...)...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("latchkey %s: got %v (%s), want an error mentioning %q", strings.Join(args, " "), err, out, want)
		}
	}

	if out := run("projects", "list"); !strings.Contains(out, "default") {
		t.Fatalf("projects list:\n%s", out)
	}
	if out := run("projects", "create", "acme", "-display-name", "Acme"); !strings.Contains(out, "lk_") {
		t.Fatalf("projects create:\n%s", out)
	}
	fails("-yes", "projects", "delete", "acme")
	run("projects", "delete", "acme", "-yes")

	// Global flags go anywhere on the line, as with kubectl or nats.
	out, err := cliRun(t, dataDir, "projects", "create", "acme2", "-addr", addr, "-o", "json")
	if err != nil || !json.Valid([]byte(out)) || !strings.Contains(out, `"apiKeySecret"`) {
		t.Fatalf("projects create acme2 -o json: %v\n%s", err, out)
	}
	// A missing object: the code as a word, no grpc-go wrapping, exit code 4.
	_, err = cliRun(t, dataDir, "sessions", "get", "no-such-session", "-addr", addr)
	if err == nil || exitCode(err) != exitNotFound || !strings.Contains(describe(err), "NotFound: ") || strings.Contains(describe(err), "rpc error") {
		t.Fatalf("sessions get of a missing session: %q (exit %d), want \"NotFound: ...\" and exit %d", describe(err), exitCode(err), exitNotFound)
	}

	bundle := filepath.Join("..", "..", "examples", "portal", "automations")
	if out := run("automations", "deploy", bundle); !strings.Contains(out, "deployed version 1") || !strings.Contains(out, "auth-sessions/check") {
		t.Fatalf("automations deploy:\n%s", out)
	}
	if out := run("automations", "list"); !strings.Contains(out, "list-invoices") {
		t.Fatalf("automations list:\n%s", out)
	}
	if out := run("automations", "bundles"); !strings.Contains(out, "VERSION") {
		t.Fatalf("automations bundles:\n%s", out)
	}
	// A second site: its own versions, its own list; the default site stays at 1.
	if out := run("automations", "deploy", bundle, "-site", "crm"); !strings.Contains(out, "deployed version 1 of site crm") {
		t.Fatalf("automations deploy -site crm:\n%s", out)
	}
	if out := run("automations", "deploy", "-site", "crm", bundle); !strings.Contains(out, "deployed version 2 of site crm") {
		t.Fatalf("automations deploy -site crm (again):\n%s", out)
	}
	if out := run("automations", "sites"); !regexp.MustCompile(`(?m)^crm\s+2$`).MatchString(out) || !regexp.MustCompile(`(?m)^default\s+1$`).MatchString(out) {
		t.Fatalf("automations sites:\n%s", out)
	}
	if out := run("automations", "list", "-site", "crm"); !strings.Contains(out, "site crm, bundle version 2") {
		t.Fatalf("automations list -site crm:\n%s", out)
	}
	fails("lower-case", "automations", "deploy", bundle, "-site", "CRM")
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "x.yaml"), []byte("apis: [nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	fails("x.yaml", "automations", "deploy", bad)

	run("sessions", "create", "-type", "recorder", "-id", "rec", "-start-url", "http://127.0.0.1:7490/login", "-label", "team=a", "-locale", "de-DE")
	if out := run("sessions", "create", "-type", "recorder", "-id", "rec-crm", "-site", "crm", "-start-url", "http://127.0.0.1:7490/login"); !regexp.MustCompile(`site\s+crm`).MatchString(out) {
		t.Fatalf("sessions create -site crm:\n%s", out)
	}
	// -user-agent alone keeps the locale: the identity is one field, updated in part.
	if out := run("sessions", "update", "rec", "-user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/140.0.0.0"); !regexp.MustCompile(`locale\s+de-DE`).MatchString(out) || !strings.Contains(out, "Chrome/140.0.0.0") {
		t.Errorf("sessions update -user-agent:\n%s", out)
	}
	fails("not a language tag", "sessions", "update", "rec", "-locale", "x y")
	stateFile := filepath.Join(t.TempDir(), "state.json")
	state := `{"cookies":[{"name":"sid","value":"cli-cookie","domain":"127.0.0.1","path":"/","expires":-1}],"origins":[]}`
	if err := os.WriteFile(stateFile, []byte(state), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := run("sessions", "import", "rec", stateFile); !strings.Contains(out, "revision 1") {
		t.Fatalf("sessions import:\n%s", out)
	}
	var exported struct {
		Cookies []struct{ Name, Value string }
	}
	if err := json.Unmarshal([]byte(run("sessions", "export", "rec")), &exported); err != nil || len(exported.Cookies) != 1 || exported.Cookies[0].Value != "cli-cookie" {
		t.Fatalf("sessions export: %v %+v", err, exported)
	}
	var listed struct {
		AuthSessions []struct{ Id, State string } `json:"authSessions"`
	}
	if err := json.Unmarshal([]byte(run("sessions", "-o", "json", "list", "-state", "ready", "-label", "team=a")), &listed); err != nil ||
		len(listed.AuthSessions) != 1 || listed.AuthSessions[0].State != "SESSION_STATE_READY" {
		t.Fatalf("sessions list: %v %+v", err, listed)
	}
	if out := run("sessions", "update", "rec", "-name", "Renamed"); !strings.Contains(out, "Renamed") {
		t.Fatalf("sessions update:\n%s", out)
	}
	if out := run("sessions", "get", "rec"); !strings.Contains(out, "READY") || !strings.Contains(out, "team=a") ||
		!strings.Contains(out, "no: a person logs a RECORDER session in through the recorder") {
		t.Fatalf("sessions get (want READY, the label and why it cannot log in unattended):\n%s", out)
	}
	if out := run("sessions", "list"); !strings.Contains(out, "UNATTENDED") || !regexp.MustCompile(`(?m)^rec\s+default\s+RECORDER\s+READY\s+\d+\s+no\b`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^rec-crm\s+crm\s+RECORDER\s`).MatchString(out) {
		t.Fatalf("sessions list (want an UNATTENDED column saying no for the RECORDER session):\n%s", out)
	}
	if out := run("audit", "rec"); !strings.Contains(out, "export") {
		t.Fatalf("audit:\n%s", out)
	}
	if out := run("sessions", "record", "rec"); !strings.Contains(out, "http://") || !strings.Contains(out, "/record/") || !strings.Contains(out, "RUN") {
		t.Fatalf("sessions record:\n%s", out)
	}
	fails("NotFound", "sessions", "record", "nope")

	credFile := filepath.Join(t.TempDir(), "creds.json")
	if err := os.WriteFile(credFile, []byte("password=cli-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	fails("JSON object", "sessions", "create", "-type", "credentials", "-credentials-file", credFile)
	fails("-type must be", "sessions", "create", "-type", "bogus")
	fails("RECORDER session", "sessions", "update-credentials", "rec", "-credentials-file", writeJSON(t, `{"password":"x"}`))
	fails("NotFound", "sessions", "get", "nope")

	run("sessions", "delete", "rec")
	fails("NotFound", "sessions", "get", "rec")

	if out := run("projects", "keys", "create", "-name", "ci"); !strings.Contains(out, "lk_") {
		t.Fatalf("keys create:\n%s", out)
	}
	var keys struct {
		ApiKeys []struct{ Id, Name string } `json:"apiKeys"`
	}
	if err := json.Unmarshal([]byte(run("projects", "-o", "json", "keys", "list")), &keys); err != nil || len(keys.ApiKeys) != 2 {
		t.Fatalf("keys list: %v %+v", err, keys)
	}
	for _, k := range keys.ApiKeys {
		if k.Name == "ci" {
			run("projects", "keys", "revoke", k.Id)
		}
	}
}

// cliRun runs a client command with the data dir of a `latchkey dev`.
func cliRun(t *testing.T, dataDir string, args ...string) (string, error) {
	t.Helper()
	out, errOut := &testkit.SyncBuffer{}, &testkit.SyncBuffer{}
	err := run(t.Context(), args, config.MapEnv(map[string]string{"LATCHKEY_DATA_DIR": dataDir}), out, errOut)
	return out.String() + errOut.String(), err
}

func writeJSON(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f.json")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDevWithTLS: `latchkey dev -dev-tls` makes a local CA and certificates and serves
// TLS only; the CLI reaches it with -ca (anywhere on the line) and is refused without.
func TestDevWithTLS(t *testing.T) {
	dataDir := t.TempDir()
	p := start(t, nil, append(devArgs(dataDir), "-dev-tls")...)
	addr := p.waitFor(t, upRE)[1]
	ca := filepath.Join(dataDir, "tls", "ca.pem")
	out, err := cliRun(t, dataDir, "projects", "keys", "list", "-addr", addr, "-ca", ca)
	if err != nil || !strings.Contains(out, "default") {
		t.Fatalf("keys list over TLS: %v\n%s", err, out)
	}
	_, err = cliRun(t, dataDir, "projects", "keys", "list", "-addr", addr)
	if err == nil || !strings.Contains(describe(err), "Unavailable") {
		t.Fatalf("keys list in plaintext to a TLS listener: %v, want Unavailable", err)
	}
	if !strings.Contains(p.stdout.String(), "-ca "+ca) {
		t.Errorf("latchkey dev does not say how the CLI reaches it:\n%s", p.stdout.String())
	}
}
