package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	"github.com/latchkey/latchkey/libs/config"
	"github.com/latchkey/latchkey/libs/telemetry"
	"github.com/latchkey/latchkey/libs/testkit"
)

// TestRunIsOneTraceInJaeger: `latchkey dev` exporting to a real Jaeger (OTLP on a
// random port, as OTEL_EXPORTER_OTLP_ENDPOINT) — a Run that needs a recreate is one
// trace there, read back through Jaeger's query API: spans of all four services, the
// recipe steps as spans, every parent inside the trace, one root, no secret in any tag
// or log. `latchkey runs trace` draws it, from Jaeger and from the Run's records.
func TestRunIsOneTraceInJaeger(t *testing.T) {
	t.Parallel()
	jaeger := testkit.Jaeger(t)
	site, base := portaltest.Start(t, portal.Config{})
	dataDir := t.TempDir()
	p := start(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.OTLP, "LATCHKEY_CHROMIUM_PATH": testkit.ChromiumPath(t)}, devArgs(dataDir)...)
	addr := p.waitFor(t, upRE)[1]
	cli := func(env map[string]string, args ...string) string {
		t.Helper()
		out, errOut := &testkit.SyncBuffer{}, &testkit.SyncBuffer{}
		env["LATCHKEY_DATA_DIR"] = dataDir
		if err := run(t.Context(), append(args, "-addr", addr), config.MapEnv(env), out, errOut); err != nil {
			t.Fatalf("latchkey %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
		}
		return out.String()
	}
	cli(map[string]string{}, "automations", "deploy", filepath.Join("..", "..", "examples", "portal", "automations"))
	creds := writeJSON(t, fmt.Sprintf(`{"username": %q, "password": %q}`, portal.AliceUsername, portal.AlicePassword))
	cli(map[string]string{}, "sessions", "create", "-type", "credentials", "-id", "traced", "-var", "baseURL="+base, "-credentials-file", creds)
	testkit.Eventually(t, 60*time.Second, func() (bool, string) {
		out := cli(map[string]string{}, "sessions", "get", "traced", "-o", "json")
		return strings.Contains(out, "SESSION_STATE_READY"), out
	})
	site.ExpireSessions()

	var started struct{ ID, TraceID string }
	if err := json.Unmarshal([]byte(cli(map[string]string{}, "runs", "start", "list-invoices", "-session", "traced", "-o", "json")), &started); err != nil {
		t.Fatal(err)
	}
	cli(map[string]string{}, "runs", "watch", started.ID)
	if started.TraceID == "" {
		t.Fatal("the Run has no trace id")
	}

	// Spans reach Jaeger in batches after they end: wait until the trace is whole.
	var spans []telemetry.Span
	testkit.Eventually(t, 60*time.Second, func() (bool, string) {
		var err error
		if spans, err = telemetry.FetchTrace(t.Context(), jaeger.Query, started.TraceID); err != nil {
			return false, err.Error()
		}
		problems := jaegerTraceProblems(spans)
		return len(problems) == 0, strings.Join(problems, "; ")
	})
	for _, s := range spans {
		for _, txt := range append(s.Texts, s.Name) {
			if strings.Contains(txt, portal.AlicePassword) {
				t.Errorf("span %s/%q carries the password", s.Service, s.Name)
			}
		}
	}

	// Every log line of the Run names it, its session and its project.
	lines := 0
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		if !strings.Contains(line, "trace_id="+started.TraceID) {
			continue
		}
		lines++
		for _, want := range []string{"run_id=run-", "session_id=traced", "project_id=default"} {
			if !strings.Contains(line, want) {
				t.Errorf("a log line of the Run lacks %s: %s", want, line)
			}
		}
	}
	if lines == 0 {
		t.Errorf("no log line of the Run:\n%s", p.stderr.String())
	}
	out := cli(map[string]string{"LATCHKEY_JAEGER_URL": jaeger.Query}, "runs", "trace", started.ID)
	for _, want := range []string{"from Jaeger", "SERVICE", "scheduler", "browser-runner", "credential-vault", "session-registry", "goto", "extract", "█"} {
		if !strings.Contains(out, want) {
			t.Errorf("runs trace from Jaeger lacks %q:\n%s", want, out)
		}
	}
	out = cli(map[string]string{}, "runs", "trace", started.ID)
	for _, want := range []string{"from the Run's records", "api list-invoices (succeeded)", "validate auth-sessions/check", "create auth-sessions/create", "queued"} {
		if !strings.Contains(out, want) {
			t.Errorf("runs trace from the records lacks %q:\n%s", want, out)
		}
	}
}

// jaegerTraceProblems says what keeps spans from being one whole Run's trace: a span of
// each of the four services and of each recipe step, every parent among them, one root.
func jaegerTraceProblems(spans []telemetry.Span) []string {
	services, ids, names := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, s := range spans {
		services[s.Service], ids[s.SpanID], names[s.Name] = true, true, true
	}
	var problems []string
	for _, svc := range []string{telemetry.SchedulerService, telemetry.RegistryService, telemetry.VaultService, telemetry.RunnerService} {
		if !services[svc] {
			problems = append(problems, fmt.Sprintf("no span of %s (services: %v)", svc, services))
		}
	}
	for _, step := range []string{"goto", "fill", "click", "request", "extract"} {
		if !names[step] {
			problems = append(problems, fmt.Sprintf("no recipe step span %q", step))
		}
	}
	roots := 0
	for _, s := range spans {
		switch {
		case s.ParentID == "":
			roots++
		case !ids[s.ParentID]:
			problems = append(problems, fmt.Sprintf("span %q has a parent outside the trace", s.Name))
		}
	}
	if roots != 1 {
		problems = append(problems, fmt.Sprintf("%d roots, want 1", roots))
	}
	return problems
}
