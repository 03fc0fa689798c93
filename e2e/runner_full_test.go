package e2e

import (
	"testing"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// TestRunnerFullStack creates a CREDENTIALS session for bob (password and TOTP) and
// runs list-invoices through the whole stack: the scheduler's create Run logs in in
// the runner, and the API Run checks and runs in the session's warm context.
func TestRunnerFullStack(t *testing.T) {
	t.Parallel()
	_, base := portaltest.Start(t, portal.Config{})
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
	// waitRunState fails the test unless the Run ends SUCCEEDED.
	waitRunState(t, runs, st.Logs, created.GetCreateRunId(), latchkeyv1.RunState_RUN_STATE_SUCCEEDED)
	started, err := runs.StartRun(ctx, &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	r := waitRunState(t, runs, st.Logs, started.GetRun().GetId(), latchkeyv1.RunState_RUN_STATE_SUCCEEDED)
	if got := r.GetOutput().GetStructValue().GetFields()["account"].GetStringValue(); got != "bob" {
		t.Errorf("output %v", r.GetOutput())
	}
}

// TestRunnerFullStackAsk: carol's login asks for the code the portal emailed; the Run
// waits in REQUESTED_MORE_INFO, ResumeRun answers, and the login goes on in the same
// browser context.
func TestRunnerFullStackAsk(t *testing.T) {
	t.Parallel()
	p, base := portaltest.Start(t, portal.Config{})
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
	run := waitRunState(t, runs, st.Logs, created.GetCreateRunId(), latchkeyv1.RunState_RUN_STATE_REQUESTED_MORE_INFO)
	if run.GetMoreInfo().GetField() != "email_code" {
		t.Fatalf("the create Run asked for %q, want email_code: %v", run.GetMoreInfo().GetField(), run)
	}
	code, ok := p.LastCode("carol")
	if !ok {
		t.Fatal("no code was emailed")
	}
	if _, err := runs.ResumeRun(ctx, &latchkeyv1.ResumeRunRequest{RunId: run.GetId(), Answers: map[string]string{"email_code": code}}); err != nil {
		t.Fatalf("resuming: %v", err)
	}
	waitRunState(t, runs, st.Logs, run.GetId(), latchkeyv1.RunState_RUN_STATE_SUCCEEDED)
}
