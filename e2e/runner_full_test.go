package e2e

import (
	"testing"
	"time"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/testkit"
)

// TestRunnerFullStack creates a CREDENTIALS session for bob (password and TOTP) and
// runs list-invoices through the whole stack: the scheduler's create Run logs in in
// the runner, and the API Run checks and runs in the session's warm context.
func TestRunnerFullStack(t *testing.T) {
	_, base := testkit.Portal(t, portal.Config{})
	st := stacktest.Start(t, stacktest.Options{})
	proj, err := latchkeyv1.NewProjectServiceClient(st.Dial(t, st.AdminKey)).CreateProject(t.Context(), &latchkeyv1.CreateProjectRequest{ProjectId: "runner-full", DisplayName: "runner full"})
	if err != nil {
		t.Fatal(err)
	}
	user := st.Dial(t, proj.GetApiKeySecret())
	ctx := t.Context()
	if _, err := latchkeyv1.NewAutomationServiceClient(user).DeployBundle(ctx, &latchkeyv1.DeployBundleRequest{Files: portalBundleFiles(t)}); err != nil {
		t.Fatal(err)
	}
	created, err := latchkeyv1.NewAuthSessionServiceClient(user).CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{
		AuthSessionId: "bob", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Vars: map[string]string{"baseURL": base},
		Credentials: map[string]string{"username": "bob", "password": portal.BobPassword, "totp_secret": portal.BobTOTPSecret},
	})
	if err != nil {
		t.Fatalf("creating the session: %v", err)
	}
	runs := latchkeyv1.NewRunServiceClient(user)
	waitRun := func(id string) *latchkeyv1.Run {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			r, err := runs.GetRun(ctx, &latchkeyv1.GetRunRequest{RunId: id})
			if err == nil {
				switch r.GetRun().GetState() {
				case latchkeyv1.RunState_RUN_STATE_SUCCEEDED, latchkeyv1.RunState_RUN_STATE_FAILED, latchkeyv1.RunState_RUN_STATE_CANCELED:
					return r.GetRun()
				}
			}
		}
		t.Fatalf("run %s did not end\nlogs:\n%s", id, st.Logs)
		return nil
	}
	if r := waitRun(created.GetCreateRunId()); r.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("create run: %s %s %s\nlogs:\n%s", r.GetState(), r.GetFailureReason(), r.GetFailureMessage(), st.Logs)
	}
	started, err := runs.StartRun(ctx, &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	r := waitRun(started.GetRun().GetId())
	if r.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("list-invoices: %s %s %s\nlogs:\n%s", r.GetState(), r.GetFailureReason(), r.GetFailureMessage(), st.Logs)
	}
	if got := r.GetOutput().GetStructValue().GetFields()["account"].GetStringValue(); got != "bob" {
		t.Errorf("output %v", r.GetOutput())
	}
}

// TestRunnerFullStackAsk: carol's login asks for the code the portal emailed; the Run
// waits in REQUESTED_MORE_INFO, ResumeRun answers, and the login goes on in the same
// browser context.
func TestRunnerFullStackAsk(t *testing.T) {
	p, base := testkit.Portal(t, portal.Config{})
	st := stacktest.Start(t, stacktest.Options{})
	proj, err := latchkeyv1.NewProjectServiceClient(st.Dial(t, st.AdminKey)).CreateProject(t.Context(), &latchkeyv1.CreateProjectRequest{ProjectId: "runner-ask", DisplayName: "runner ask"})
	if err != nil {
		t.Fatal(err)
	}
	user := st.Dial(t, proj.GetApiKeySecret())
	ctx := t.Context()
	if _, err := latchkeyv1.NewAutomationServiceClient(user).DeployBundle(ctx, &latchkeyv1.DeployBundleRequest{Files: portalBundleFiles(t)}); err != nil {
		t.Fatal(err)
	}
	created, err := latchkeyv1.NewAuthSessionServiceClient(user).CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{
		AuthSessionId: "carol", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Vars: map[string]string{"baseURL": base},
		Credentials: map[string]string{"username": "carol", "password": portal.CarolPassword},
	})
	if err != nil {
		t.Fatalf("creating the session: %v", err)
	}
	runs := latchkeyv1.NewRunServiceClient(user)
	var run *latchkeyv1.Run
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		r, err := runs.GetRun(ctx, &latchkeyv1.GetRunRequest{RunId: created.GetCreateRunId()})
		if err == nil && r.GetRun().GetState() == latchkeyv1.RunState_RUN_STATE_REQUESTED_MORE_INFO {
			run = r.GetRun()
			break
		}
	}
	if run == nil || run.GetMoreInfo().GetField() != "email_code" {
		t.Fatalf("the create Run never asked for email_code: %v\nlogs:\n%s", run, st.Logs)
	}
	code, ok := p.LastCode("carol")
	if !ok {
		t.Fatal("no code was emailed")
	}
	if _, err := runs.ResumeRun(ctx, &latchkeyv1.ResumeRunRequest{RunId: run.GetId(), Answers: map[string]string{"email_code": code}}); err != nil {
		t.Fatalf("resuming: %v", err)
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		r, err := runs.GetRun(ctx, &latchkeyv1.GetRunRequest{RunId: run.GetId()})
		if err == nil && r.GetRun().GetState() == latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			return
		}
		if err == nil && (r.GetRun().GetState() == latchkeyv1.RunState_RUN_STATE_FAILED || r.GetRun().GetState() == latchkeyv1.RunState_RUN_STATE_CANCELED) {
			t.Fatalf("create after the answer: %s %s %s", r.GetRun().GetState(), r.GetRun().GetFailureReason(), r.GetRun().GetFailureMessage())
		}
	}
	t.Fatalf("the create Run did not finish after the answer\nlogs:\n%s", st.Logs)
}
