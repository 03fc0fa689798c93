package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/testkit"
)

// world is a whole Latchkey stack, the demo portal, and a project with the portal's
// bundle deployed, driven as a user drives it: over the public gRPC API.
type world struct {
	st        *stacktest.Stack
	portal    *portal.Portal
	portalURL string
	conn      *grpc.ClientConn
	apiKey    string
	runs      latchkeyv1.RunServiceClient
	sessions  latchkeyv1.AuthSessionServiceClient
}

// newWorld starts everything; opts may add services' settings.
func newWorld(t testing.TB, opts stacktest.Options) *world {
	t.Helper()
	return newWorldWith(t, portal.Config{}, opts)
}

// newWorldWith is newWorld with a portal configured by pcfg.
func newWorldWith(t testing.TB, pcfg portal.Config, opts stacktest.Options) *world {
	t.Helper()
	p, url := portaltest.Start(t, pcfg)
	if opts.Env == nil {
		opts.Env = map[string]string{}
	}
	if _, ok := opts.Env["LATCHKEY_CHROMIUM_PATH"]; !ok {
		opts.Env["LATCHKEY_CHROMIUM_PATH"] = testkit.ChromiumPath(t)
	}
	st := stacktest.Start(t, opts)
	admin := st.Dial(t, st.AdminKey)
	created, err := latchkeyv1.NewProjectServiceClient(admin).CreateProject(t.Context(), &latchkeyv1.CreateProjectRequest{ProjectId: "acme", DisplayName: "Acme"})
	if err != nil {
		t.Fatalf("CreateProject: %v", err)
	}
	conn := st.Dial(t, created.GetApiKeySecret())
	w := &world{st: st, portal: p, portalURL: url, conn: conn, apiKey: created.GetApiKeySecret(), runs: latchkeyv1.NewRunServiceClient(conn), sessions: latchkeyv1.NewAuthSessionServiceClient(conn)}
	w.deploy(t)
	return w
}

// deploy deploys the portal's bundle plus any extra files.
func (w *world) deploy(t testing.TB, extra ...*latchkeyv1.BundleFile) {
	t.Helper()
	dir := "../examples/portal/automations"
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := extra
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, &latchkeyv1.BundleFile{Path: e.Name(), Content: b})
	}
	if _, err := latchkeyv1.NewAutomationServiceClient(w.conn).DeployBundle(t.Context(), &latchkeyv1.DeployBundleRequest{Files: files}); err != nil {
		t.Fatalf("DeployBundle: %v", err)
	}
}

// createSession creates a session for the portal and returns it with its create Run.
func (w *world) createSession(t testing.TB, typ latchkeyv1.SessionType, creds map[string]string) (*latchkeyv1.AuthSession, string) {
	t.Helper()
	resp, err := w.sessions.CreateAuthSession(t.Context(), &latchkeyv1.CreateAuthSessionRequest{
		Type: typ, Credentials: creds, Vars: map[string]string{"baseURL": w.portalURL},
	})
	if err != nil {
		t.Fatalf("CreateAuthSession: %v", err)
	}
	return resp.GetAuthSession(), resp.GetCreateRunId()
}

// readySession creates a CREDENTIALS session for alice and waits until it is READY.
func (w *world) readySession(t testing.TB) *latchkeyv1.AuthSession {
	t.Helper()
	sess, runID := w.createSession(t, latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, alice())
	if run := w.wait(t, runID); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("create run ended %s: %s %s\nlogs:\n%s", run.GetState(), run.GetFailureReason(), run.GetFailureMessage(), tail(w.st.Logs.String()))
	}
	return w.session(t, sess.GetId())
}

func alice() map[string]string {
	return map[string]string{"username": portal.AliceUsername, "password": portal.AlicePassword}
}

func (w *world) session(t testing.TB, id string) *latchkeyv1.AuthSession {
	t.Helper()
	resp, err := w.sessions.GetAuthSession(t.Context(), &latchkeyv1.GetAuthSessionRequest{AuthSessionId: id})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetAuthSession()
}

// start starts an API Run.
func (w *world) start(t testing.TB, api, session string, creds map[string]string) *latchkeyv1.Run {
	t.Helper()
	run, err := w.startRun(t.Context(), api, session, creds)
	if err != nil {
		t.Fatal(err)
	}
	return run
}

// startRun is start for goroutines other than the test's: it returns its error.
func (w *world) startRun(ctx context.Context, api, session string, creds map[string]string) (*latchkeyv1.Run, error) {
	resp, err := w.runs.StartRun(ctx, &latchkeyv1.StartRunRequest{Api: api, AuthSessionId: session, Credentials: creds, Params: &structpb.Struct{}})
	if err != nil {
		return nil, fmt.Errorf("StartRun %s: %w", api, err)
	}
	return resp.GetRun(), nil
}

// wait watches a Run until it ends and returns its last state.
func (w *world) wait(t testing.TB, runID string) *latchkeyv1.Run {
	t.Helper()
	run, err := w.watch(t.Context(), runID)
	if err != nil {
		t.Fatalf("%v\nlogs:\n%s", err, tail(w.st.Logs.String()))
	}
	return run
}

// watch is wait for goroutines other than the test's: it returns its error.
func (w *world) watch(ctx context.Context, runID string) (*latchkeyv1.Run, error) {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	stream, err := w.runs.WatchRun(ctx, &latchkeyv1.WatchRunRequest{RunId: runID})
	if err != nil {
		return nil, fmt.Errorf("WatchRun %s: %w", runID, err)
	}
	var last *latchkeyv1.Run
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			return last, nil
		}
		if err != nil {
			return nil, fmt.Errorf("WatchRun %s: %w (last %v)", runID, err, last)
		}
		last = m.GetRun()
	}
}

// startAndWatch starts an API Run with no credentials and watches it until it ends,
// returning errors instead of failing the test, for goroutines other than the test's.
func (w *world) startAndWatch(ctx context.Context, api, session string) (*latchkeyv1.Run, error) {
	run, err := w.startRun(ctx, api, session, nil)
	if err != nil {
		return nil, err
	}
	return w.watch(ctx, run.GetId())
}

// waitRunState polls a Run until it is in state, and fails the test if it ends in
// another state first.
func (w *world) waitRunState(t testing.TB, runID string, state latchkeyv1.RunState) *latchkeyv1.Run {
	t.Helper()
	return waitRunState(t, w.runs, w.st.Logs, runID, state)
}

// waitRunState is world.waitRunState for tests that build their own stack.
func waitRunState(t testing.TB, runs latchkeyv1.RunServiceClient, logs fmt.Stringer, runID string, state latchkeyv1.RunState) *latchkeyv1.Run {
	t.Helper()
	var run *latchkeyv1.Run
	eventuallyWith(t, 60*time.Second, func() (bool, string) {
		resp, err := runs.GetRun(t.Context(), &latchkeyv1.GetRunRequest{RunId: runID})
		if err != nil {
			return false, fmt.Sprintf("GetRun %s: %v", runID, err)
		}
		run = resp.GetRun()
		return run.GetState() == state || isEnded(run.GetState()), fmt.Sprintf("run %s is %s, waiting for %s", runID, run.GetState(), state)
	}, func() string { return "logs:\n" + tail(logs.String()) })
	if run.GetState() != state {
		t.Fatalf("run %s ended %s %s: %s, want %s\nlogs:\n%s", runID, run.GetState(), run.GetFailureReason(), run.GetFailureMessage(), state, tail(logs.String()))
	}
	return run
}

// waitPortalRequest waits until the portal has received more requests than seen (its
// Counters().Requests read before): some Run has reached the site. With a Delay fault
// set, that request is then held in the browser for the delay.
func (w *world) waitPortalRequest(t testing.TB, seen int64) {
	t.Helper()
	w.eventually(t, 60*time.Second, func() (bool, string) {
		n := w.portal.Counters().Requests
		return n > seen, fmt.Sprintf("the portal has received %d requests, no more than the %d before", n, seen)
	})
}

// tail keeps the end of long logs for failure messages.
func tail(s string) string {
	const n = 6000
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// waitSession polls a session until cond holds.
func (w *world) waitSession(t *testing.T, id, what string, cond func(*latchkeyv1.AuthSession) bool) *latchkeyv1.AuthSession {
	t.Helper()
	var s *latchkeyv1.AuthSession
	w.eventually(t, 60*time.Second, func() (bool, string) {
		resp, err := w.sessions.GetAuthSession(t.Context(), &latchkeyv1.GetAuthSessionRequest{AuthSessionId: id})
		if err != nil {
			return false, fmt.Sprintf("session %s, waiting for %s: %v", id, what, err)
		}
		s = resp.GetAuthSession()
		return cond(s), fmt.Sprintf("session %s, waiting for %s: it is %s (%s)", id, what, s.GetState(), s.GetStateMessage())
	})
	return s
}

// eventually is testkit.Eventually that also logs the end of the stack's logs when the
// condition is not met in time.
func (w *world) eventually(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	eventuallyWith(t, timeout, cond, func() string { return "logs:\n" + tail(w.st.Logs.String()) })
}

// eventuallyWith is testkit.Eventually that, when the condition is not met in time,
// also logs what more returns (built only then: the logs can be long).
func eventuallyWith(t testing.TB, timeout time.Duration, cond func() (bool, string), more func() string) {
	t.Helper()
	met := false
	defer func() {
		if !met {
			t.Log(more())
		}
	}()
	testkit.Eventually(t, timeout, cond)
	met = true
}
