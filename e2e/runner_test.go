package e2e

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	"github.com/latchkey/latchkey/libs/bus"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/recipe"
)

// TestRunnerThroughServices drives the browser runner as the scheduler does, with the
// real registry and vault: a state imported through the public API is decrypted by the
// vault for the Run (audited), restored, checked VALID; an API with check_first then
// runs in the session's warm context and its output comes back on lk.results.<run>.
func TestRunnerThroughServices(t *testing.T) {
	t.Parallel()
	_, base := portaltest.Start(t, portal.Config{})
	st := stacktest.Start(t, stacktest.Options{Services: []string{"vault", "registry", "runner"}})
	admin := st.Dial(t, st.AdminKey)
	proj, err := latchkeyv1.NewProjectServiceClient(admin).CreateProject(t.Context(), &latchkeyv1.CreateProjectRequest{ProjectId: "runner-e2e", DisplayName: "runner e2e"})
	if err != nil {
		t.Fatalf("creating a project: %v\nlogs:\n%s", err, st.Logs)
	}
	user := st.Dial(t, proj.GetApiKeySecret())
	ctx := t.Context()

	dep, err := latchkeyv1.NewAutomationServiceClient(user).DeployBundle(ctx, &latchkeyv1.DeployBundleRequest{Files: portalBundleFiles(t)})
	if err != nil {
		t.Fatalf("deploying the portal bundle: %v", err)
	}
	sessions := latchkeyv1.NewAuthSessionServiceClient(user)
	if _, err := sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{
		AuthSessionId: "s1", Type: latchkeyv1.SessionType_SESSION_TYPE_RECORDER, Vars: map[string]string{"baseURL": base},
		Recorder: &latchkeyv1.RecorderSettings{StartUrl: base + "/login", FinishUrlPrefix: base + "/dashboard"},
	}); err != nil {
		t.Fatalf("creating a session: %v", err)
	}
	imported, err := sessions.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "s1", StorageStateJson: aliceStateJSON(t, base)})
	if err != nil {
		t.Fatalf("importing a state: %v", err)
	}
	rev := imported.GetAuthSession().GetStateRevision()

	results := runnerResults(t, st.JetStream())
	session := &runnerv1.SessionRef{AuthSessionId: "s1", Type: latchkeyv1.SessionType_SESSION_TYPE_RECORDER, StateRevision: rev}
	check := &runnerv1.RunnerTask{TaskId: "e2e-task-1", RunId: "e2e-run-1", ProjectId: "runner-e2e", Kind: runnerv1.TaskKind_TASK_KIND_CHECK,
		Api: recipe.CheckAPI, Session: session, BundleVersion: dep.GetBundle().GetVersion(), Attempt: 1,
		Deadline: timestamppb.New(time.Now().Add(time.Minute))}
	res := sendTask(t, st, check, results)
	if res.GetCheckOutcome() != latchkeyv1.CheckOutcome_CHECK_OUTCOME_VALID {
		t.Fatalf("check: %s %s %s\nlogs:\n%s", res.GetStatus(), res.GetCheckOutcome(), res.GetFailureMessage(), st.Logs)
	}
	// The runner stores the rotated cookie itself (the next revision) or, when it
	// cannot, hands it back for the scheduler to store.
	if len(res.GetCapturedStateCiphertext()) == 0 && res.GetBaseStateRevision() <= rev {
		t.Error("the check's rotated cookie was neither stored nor handed back")
	}
	api := proto.CloneOf(check)
	api.TaskId, api.RunId, api.Kind, api.Api, api.CheckFirst, api.CheckRunId = "e2e-task-2", "e2e-run-2", runnerv1.TaskKind_TASK_KIND_API, "list-invoices", true, "e2e-check-2"
	res = sendTask(t, st, api, results)
	if res.GetStatus() != runnerv1.TaskStatus_TASK_STATUS_SUCCEEDED || !res.GetWarmContext() {
		t.Fatalf("list-invoices: %s warm=%v %s", res.GetStatus(), res.GetWarmContext(), res.GetFailureMessage())
	}
	if rows := res.GetOutput().GetStructValue().GetFields()["invoices"].GetListValue().GetValues(); len(rows) != 5 {
		t.Errorf("list-invoices output %v, want 5 invoices", res.GetOutput())
	}

	vault := vaultv1.NewVaultServiceClient(st.Dial(t, st.InternalToken))
	audit, err := vault.ListAuditEvents(metadata.AppendToOutgoingContext(ctx, "x-latchkey-service", "e2e"), &vaultv1.ListAuditEventsRequest{ProjectId: "runner-e2e", ResourceId: "s1"})
	if err != nil {
		t.Fatalf("listing audit events: %v", err)
	}
	found := false
	for _, ev := range audit.GetEvents() {
		if ev.GetReason().GetPurpose() == "run:e2e-run-1" && strings.Contains(ev.GetCaller(), "runner") {
			found = true
		}
	}
	if !found {
		t.Errorf("no audited decrypt by the runner for run e2e-run-1 among %v", audit.GetEvents())
	}
	if strings.Contains(st.Logs.String(), portal.AlicePassword) {
		t.Error("a password appears in the logs")
	}
}

// aliceStateJSON logs alice in over HTTP and returns the Playwright storageState a
// browser would have.
func aliceStateJSON(t *testing.T, base string) []byte {
	t.Helper()
	c := portaltest.Login(t, base, portal.User{Username: portal.AliceUsername, Password: portal.AlicePassword})
	var tok struct{ Token string }
	if err := json.Unmarshal([]byte(portaltest.Get(t, c, base+"/api/token")), &tok); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(base)
	state := map[string]any{"cookies": []any{}, "origins": []any{map[string]any{
		"origin": base, "localStorage": []any{map[string]string{"name": "portal_token", "value": tok.Token}},
	}}}
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == portal.SessionCookie {
			state["cookies"] = []any{map[string]any{"name": ck.Name, "value": ck.Value, "domain": u.Hostname(), "path": "/", "expires": -1, "httpOnly": true, "secure": false, "sameSite": "Lax"}}
		}
	}
	b, _ := json.Marshal(state)
	return b
}

// runnerResults consumes every task result, as the scheduler would.
func runnerResults(t *testing.T, js jetstream.JetStream) jetstream.Consumer {
	t.Helper()
	cons, err := js.CreateConsumer(t.Context(), bus.StreamResults, jetstream.ConsumerConfig{FilterSubject: bus.SubjectResultsAll, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	return cons
}

// sendTask publishes a task to the stack's runner pool and returns its final result.
func sendTask(t *testing.T, st *stacktest.Stack, task *runnerv1.RunnerTask, results jetstream.Consumer) *runnerv1.TaskResult {
	t.Helper()
	b, _ := proto.Marshal(task)
	subj, err := bus.TaskSubject(st.Config.RunnerPool)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.JetStream().PublishMsg(t.Context(), bus.NewMsg(t.Context(), bus.Propagator(), subj, b, task.GetTaskId())); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for {
		msg, err := results.Next(jetstream.FetchContext(ctx))
		if err != nil {
			t.Fatalf("no result for %s: %v\nlogs:\n%s", task.GetTaskId(), err, st.Logs)
		}
		_ = msg.Ack()
		var res runnerv1.TaskResult
		if err := proto.Unmarshal(msg.Data(), &res); err != nil {
			t.Fatal(err)
		}
		if res.GetTaskId() == task.GetTaskId() {
			return &res
		}
	}
}

// portalBundleFiles reads the demo portal's bundle.
func portalBundleFiles(t *testing.T) []*latchkeyv1.BundleFile {
	t.Helper()
	var files []*latchkeyv1.BundleFile
	dir := filepath.Join("..", "examples", "portal", "automations")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, &latchkeyv1.BundleFile{Path: e.Name(), Content: b})
	}
	return files
}
