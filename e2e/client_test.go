package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	"github.com/latchkey/latchkey/libs/client"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// TestGoClient is what a Go program does with libs/client: run an API and read its
// output, tell an EXPIRED session from other refusals with errors.Is, move a storage
// state out of and into a session, and see a bad key refused.
func TestGoClient(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	sess := w.readySession(t)
	c, err := client.Dial(w.st.GRPCAddr(), client.Options{APIKey: w.apiKey})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	t.Run("Run starts a Run and returns it ended, with its output", func(t *testing.T) {
		var events []string
		started, err := c.StartRun(t.Context(), &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: sess.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		run, err := c.Wait(t.Context(), started.GetId(), func(m *latchkeyv1.WatchRunResponse) { events = append(events, m.GetEvent()) })
		if err != nil {
			t.Fatal(err)
		}
		if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED || !strings.Contains(run.GetOutput().String(), "INV-") {
			t.Fatalf("run %s, output %v", run.GetState(), run.GetOutput())
		}
		if len(events) == 0 {
			t.Error("Wait passed no progress")
		}
		again, err := c.Run(t.Context(), &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: sess.GetId()})
		if err != nil || again.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED || again.GetId() == run.GetId() {
			t.Fatalf("Run: %v %s (a second Run, not the first again)", err, again.GetState())
		}
	})

	t.Run("an EXPIRED session is ErrAuthSessionExpired", func(t *testing.T) {
		bad, _ := w.createSession(t, latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, map[string]string{"username": portal.AliceUsername, "password": "wrong"})
		w.waitSession(t, bad.GetId(), "EXPIRED", func(s *latchkeyv1.AuthSession) bool {
			return s.GetState() == latchkeyv1.SessionState_SESSION_STATE_EXPIRED
		})
		_, err := c.StartRun(t.Context(), &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: bad.GetId()})
		if !errors.Is(err, client.ErrAuthSessionExpired) || !errors.Is(err, client.ErrFailedPrecondition) || status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("StartRun on an EXPIRED session: %v, want ErrAuthSessionExpired (FailedPrecondition)", err)
		}
		if _, err := c.StartRun(t.Context(), &latchkeyv1.StartRunRequest{Api: "no-such-api", AuthSessionId: sess.GetId()}); errors.Is(err, client.ErrAuthSessionExpired) || err == nil {
			t.Errorf("an unknown API: %v, want a refusal that is not ErrAuthSessionExpired", err)
		}
		if _, err := c.Wait(t.Context(), "run-nobody-started", nil); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("Wait for an unknown Run: %v, want ErrNotFound", err)
		}
	})

	t.Run("a storage state exported from one session imports into another", func(t *testing.T) {
		state, rev, err := c.ExportStorageState(t.Context(), sess.GetId(), 0)
		if err != nil || rev == 0 || !strings.Contains(string(state), `"cookies"`) {
			t.Fatalf("ExportStorageState: %v, revision %d", err, rev)
		}
		other, err := c.Sessions.CreateAuthSession(t.Context(), &latchkeyv1.CreateAuthSessionRequest{
			Type: latchkeyv1.SessionType_SESSION_TYPE_RECORDER, Vars: map[string]string{"baseURL": w.portalURL},
			Recorder: &latchkeyv1.RecorderSettings{StartUrl: w.portalURL + "/login", FinishUrlPrefix: w.portalURL + "/dashboard"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.ImportStorageState(t.Context(), other.GetAuthSession().GetId(), state); err != nil {
			t.Fatalf("ImportStorageState: %v", err)
		}
		run, err := c.Run(t.Context(), &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: other.GetAuthSession().GetId()})
		if err != nil || run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			t.Fatalf("a Run on the imported state: %v %s %s", err, run.GetState(), run.GetFailureMessage())
		}
	})

	t.Run("a bad API key is ErrUnauthenticated", func(t *testing.T) {
		bad, err := client.Dial(w.st.GRPCAddr(), client.Options{APIKey: "lk_not-a-key"})
		if err != nil {
			t.Fatal(err)
		}
		defer bad.Close()
		if _, err := bad.StartRun(t.Context(), &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: sess.GetId()}); !errors.Is(err, client.ErrUnauthenticated) {
			t.Errorf("StartRun with a bad key: %v, want ErrUnauthenticated", err)
		}
	})
}

// TestGoClientExample runs examples/go-client, a module of its own that imports
// libs/client as an internal system would, against the stack and the portal.
func TestGoClientExample(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	sess := w.readySession(t)
	cmd := exec.CommandContext(t.Context(), "go", "run", ".", "-addr", w.st.GRPCAddr(), "-session", sess.GetId(), "list-invoices")
	cmd.Dir = filepath.Join("..", "examples", "go-client")
	// Its own module, outside the repository's workspace; the key comes from the
	// environment, as the example's documentation says.
	cmd.Env = append(os.Environ(), "GOWORK=off", "LATCHKEY_API_KEY="+w.apiKey)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = ee.Stderr
		}
		t.Fatalf("go run examples/go-client: %v\n%s%s", err, out, stderr)
	}
	if !strings.Contains(string(out), "INV-") {
		t.Fatalf("the example printed %s, want the invoices", out)
	}
}
