package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJobsCLI drives `latchkey jobs` against `latchkey dev`: create, get, list,
// update, pause, resume, runs and delete, in tables and JSON, and its refusals. The
// Jobs stay paused or hours away, so nothing fires.
func TestJobsCLI(t *testing.T) {
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

	run("automations", "deploy", filepath.Join("..", "..", "examples", "portal", "automations"))
	run("sessions", "create", "-type", "recorder", "-id", "rec", "-start-url", "http://127.0.0.1:7490/login")
	stateFile := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(stateFile, []byte(`{"cookies":[],"origins":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	run("sessions", "import", "rec", stateFile)

	out := run("jobs", "create", "-id", "nightly", "-api", "list-invoices", "-session", "rec", "-cron", "0 3 * * *", "-tz", "Europe/Paris", "-paused")
	if !strings.Contains(out, "paused") || !strings.Contains(out, `cron "0 3 * * *" Europe/Paris`) {
		t.Fatalf("jobs create:\n%s", out)
	}
	var got struct {
		Job struct{ Id, State, Api string } `json:"job"`
	}
	if err := json.Unmarshal([]byte(run("jobs", "-o", "json", "get", "nightly")), &got); err != nil || got.Job.State != "JOB_STATE_PAUSED" || got.Job.Api != "list-invoices" {
		t.Fatalf("jobs get -o json: %v %+v", err, got)
	}
	out = run("jobs", "create", "-id", "months", "-api", "list-invoices", "-session", "rec", "-payloads", `[{"month":"01"},{"month":"02"}]`, "-max-concurrency", "2", "-paused")
	if !strings.Contains(out, "2 (max 2 at once)") || !strings.Contains(out, "batch") {
		t.Fatalf("jobs create of a batch:\n%s", out)
	}
	if out := run("jobs", "list", "-session", "rec"); !strings.Contains(out, "nightly") || !strings.Contains(out, "months") {
		t.Fatalf("jobs list:\n%s", out)
	}
	if out := run("jobs", "update", "nightly", "-every", "1h", "-name", "Hourly"); !strings.Contains(out, "every 1h0m0s") || !strings.Contains(out, "Hourly") {
		t.Fatalf("jobs update:\n%s", out)
	}
	if out := run("jobs", "resume", "nightly"); !strings.Contains(out, "active") {
		t.Fatalf("jobs resume:\n%s", out)
	}
	if out := run("jobs", "pause", "nightly"); !strings.Contains(out, "paused") {
		t.Fatalf("jobs pause:\n%s", out)
	}
	if out := run("jobs", "runs", "nightly"); !strings.Contains(out, "JOB RUN") {
		t.Fatalf("jobs runs:\n%s", out)
	}

	fails("schedule.cron", "jobs", "create", "-api", "list-invoices", "-session", "rec", "-cron", "61 * * * *")
	fails("give one of", "jobs", "create", "-api", "list-invoices", "-session", "rec", "-cron", "* * * * *", "-every", "1h")
	fails("JSON array", "jobs", "create", "-api", "list-invoices", "-session", "rec", "-payloads", `{"month":"01"}`)
	fails("nothing to change", "jobs", "update", "nightly")
	fails("NotFound", "jobs", "get", "nope")

	if out := run("jobs", "delete", "nightly"); !strings.Contains(out, "deleted job nightly") {
		t.Fatalf("jobs delete:\n%s", out)
	}
	fails("NotFound", "jobs", "get", "nightly")
	run("jobs", "delete", "months")
}
