package e2e

import (
	"context"
	"fmt"
	neturl "net/url"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/testkit"
)

func TestCreateAsksAndIsResumed(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	creds := map[string]string{"username": portal.CarolUsername, "password": portal.CarolPassword}
	sess, createID := w.createSession(t, latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, creds)

	asked := w.waitRunState(t, createID, latchkeyv1.RunState_RUN_STATE_REQUESTED_MORE_INFO)
	if asked.GetMoreInfo().GetField() != "email_code" {
		t.Fatalf("create did not ask for the emailed code: %v", asked)
	}
	code, ok := w.portal.LastCode(portal.CarolUsername)
	if !ok {
		t.Fatal("the portal sent no code")
	}
	if _, err := w.runs.ResumeRun(t.Context(), &latchkeyv1.ResumeRunRequest{RunId: createID, Answers: map[string]string{"email_code": code}}); err != nil {
		t.Fatalf("ResumeRun: %v", err)
	}
	if run := w.wait(t, createID); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("create after resume = %s %s: %s", run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
	}
	if got := w.session(t, sess.GetId()); got.GetState() != latchkeyv1.SessionState_SESSION_STATE_READY {
		t.Fatalf("session = %s", got.GetState())
	}
}

// TestSchedulerRestartMidRun runs the scheduler apart from the other services, stops it
// while a Run's task is in the browser, starts a new one, and sees the Run finish.
func TestSchedulerRestartMidRun(t *testing.T) {
	t.Parallel()
	w := newSplitWorld(t)
	w.portal.SetFault(portal.Fault{Delay: 1500 * time.Millisecond})
	seen := w.portal.Counters().Requests
	started, err := w.runs.StartRun(t.Context(), &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: w.sessionID})
	if err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	w.waitPortalRequest(t, seen) // the task is in the browser now, held by the delay
	w.restartScheduler(t)
	w.portal.SetFault(portal.Fault{})
	run := w.wait(t, started.GetRun().GetId())
	if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("run after scheduler restart = %s %s: %s", run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
	}
	wantInvoices(t, run)
}

// splitWorld is a stack whose scheduler runs apart from the other services, so a test
// can stop it and start another: the session is a RECORDER session with an imported
// logged-in state, which needs no login, so the registry needs no scheduler address.
type splitWorld struct {
	*world
	core, sched *stacktest.Stack
	schedOpts   stacktest.Options
	key         string
	sessionID   string
}

func newSplitWorld(t *testing.T) *splitWorld {
	t.Helper()
	p, url := portaltest.Start(t, portal.Config{})
	core := stacktest.Start(t, stacktest.Options{Services: []string{"vault", "registry", "runner"}, Env: map[string]string{"LATCHKEY_CHROMIUM_PATH": testkit.ChromiumPath(t)}})
	s := &splitWorld{core: core, schedOpts: stacktest.Options{
		Services: []string{"scheduler"},
		Env:      map[string]string{"LATCHKEY_NATS_URL": core.NATSURL()},
		Args:     []string{"-registry-addr", core.GRPCAddr(), "-vault-addr", core.GRPCAddr()},
	}}
	s.sched = stacktest.Start(t, s.schedOpts)
	admin := core.Dial(t, core.AdminKey)
	created, err := latchkeyv1.NewProjectServiceClient(admin).CreateProject(t.Context(), &latchkeyv1.CreateProjectRequest{ProjectId: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	s.key = created.GetApiKeySecret()
	s.world = &world{st: core, portal: p, portalURL: url, conn: core.Dial(t, s.key)}
	s.sessions = latchkeyv1.NewAuthSessionServiceClient(s.conn)
	s.deploy(t)
	sessResp, err := s.sessions.CreateAuthSession(t.Context(), &latchkeyv1.CreateAuthSessionRequest{
		Type: latchkeyv1.SessionType_SESSION_TYPE_RECORDER, Vars: map[string]string{"baseURL": url},
		Recorder: &latchkeyv1.RecorderSettings{StartUrl: url + "/login", FinishUrlPrefix: url + "/dashboard"},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.sessionID = sessResp.GetAuthSession().GetId()
	if _, err := s.sessions.ImportStorageState(t.Context(), &latchkeyv1.ImportStorageStateRequest{AuthSessionId: s.sessionID, StorageStateJson: loggedInState(t, url)}); err != nil {
		t.Fatalf("import: %v", err)
	}
	s.runs = latchkeyv1.NewRunServiceClient(s.sched.Dial(t, s.key))
	return s
}

// restartScheduler stops the scheduler and starts a new one in its place.
func (s *splitWorld) restartScheduler(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	s.sched.Shutdown(ctx)
	cancel()
	s.sched = stacktest.Start(t, s.schedOpts)
	s.runs = latchkeyv1.NewRunServiceClient(s.sched.Dial(t, s.key))
}

// loggedInState logs alice in over HTTP and returns her cookies as a Playwright state.
func loggedInState(t *testing.T, url string) []byte {
	t.Helper()
	c := portaltestLogin(t, url)
	var b strings.Builder
	b.WriteString(`{"cookies":[`)
	for i, ck := range c {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"name":"` + ck[0] + `","value":"` + ck[1] + `","domain":"127.0.0.1","path":"/","expires":-1,"httpOnly":true,"secure":false,"sameSite":"Lax"}`)
	}
	b.WriteString(`],"origins":[]}`)
	return []byte(b.String())
}

// TestOneRunIsOneTrace checks that a Run that needed a login is one trace across the
// four services, with correct parent links and no secret in any span.
func TestOneRunIsOneTrace(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewInMemoryExporter()
	w := newWorld(t, stacktest.Options{SpanExporter: spans})
	sess := w.readySession(t)
	w.portal.ExpireSessions()
	run := w.wait(t, w.start(t, "list-invoices", sess.GetId(), nil).GetId())
	if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("run = %s: %s", run.GetState(), run.GetFailureMessage())
	}
	// Server spans end after their responses: wait until the trace is whole (every
	// service, every step, every parent) rather than for a while.
	var mine []sdktrace.ReadOnlySpan
	testkit.Eventually(t, 10*time.Second, func() (bool, string) {
		mine = mine[:0]
		for _, s := range spans.GetSpans().Snapshots() {
			if s.SpanContext().TraceID().String() == run.GetTraceId() {
				mine = append(mine, s)
			}
		}
		problems := traceProblems(mine)
		return len(problems) == 0, strings.Join(problems, "; ")
	})
	secrets := []string{portal.AlicePassword}
	for _, s := range mine {
		var texts []string
		texts = append(texts, s.Name(), s.Status().Description)
		for _, a := range s.Attributes() {
			texts = append(texts, a.Value.Emit())
		}
		for _, e := range s.Events() {
			texts = append(texts, e.Name)
			for _, a := range e.Attributes {
				texts = append(texts, a.Value.Emit())
			}
		}
		for _, txt := range texts {
			for _, secret := range secrets {
				if strings.Contains(txt, secret) {
					t.Errorf("span %q carries a secret", s.Name())
				}
			}
		}
	}
}

// traceProblems says what keeps spans from being one whole Run's trace: a span of each
// of the four services, of each recipe step, every parent among them, and one root.
func traceProblems(spans []sdktrace.ReadOnlySpan) []string {
	services := map[string]bool{}
	ids := map[string]bool{}
	names := map[string]bool{}
	for _, s := range spans {
		ids[s.SpanContext().SpanID().String()] = true
		names[s.Name()] = true
		for _, a := range s.Resource().Attributes() {
			if a.Key == semconv.ServiceNameKey {
				services[a.Value.AsString()] = true
			}
		}
	}
	var problems []string
	for _, svc := range []string{"latchkey-scheduler", "latchkey-session-registry", "latchkey-credential-vault", "latchkey-browser-runner"} {
		if !services[svc] {
			problems = append(problems, fmt.Sprintf("no span of %s in the Run's trace (services: %v)", svc, services))
		}
	}
	for _, step := range []string{"goto", "fill", "click", "request", "extract"} {
		if !names[step] {
			problems = append(problems, fmt.Sprintf("no recipe step span %q in the Run's trace", step))
		}
	}
	roots := 0
	for _, s := range spans {
		if !s.Parent().IsValid() {
			roots++
			continue
		}
		if !ids[s.Parent().SpanID().String()] {
			problems = append(problems, fmt.Sprintf("span %q has a parent outside the trace", s.Name()))
		}
	}
	if roots != 1 {
		problems = append(problems, fmt.Sprintf("the Run's trace has %d roots, want 1", roots))
	}
	return problems
}

// portaltestLogin logs alice in over plain HTTP and returns her cookies (name, value).
func portaltestLogin(t *testing.T, base string) [][2]string {
	t.Helper()
	c := portaltest.Login(t, base, portal.User{Username: portal.AliceUsername, Password: portal.AlicePassword})
	u, err := neturl.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	for _, ck := range c.Jar.Cookies(u) {
		out = append(out, [2]string{ck.Name, ck.Value})
	}
	return out
}
