package main

import (
	"context"
	"testing"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner"
	"github.com/latchkey/latchkey/libs/testkit"
)

// plainBackend stands in for the registry and the vault: it "seals" by copying, which
// is fine for a test that never leaves the process.
type plainBackend struct {
	vars    map[string]string
	secrets map[string]string
	state   []byte
}

func (b *plainBackend) StorageState(context.Context, string, string, int64) ([]byte, int64, error) {
	return b.state, 1, nil
}
func (b *plainBackend) SessionVars(context.Context, string, string) (map[string]string, error) {
	return b.vars, nil
}
func (b *plainBackend) Seal(_ context.Context, _ runner.Sealed, p []byte) ([]byte, error) {
	return append([]byte(nil), p...), nil
}
func (b *plainBackend) Open(_ context.Context, _ runner.Sealed, c []byte, _ string) ([]byte, error) {
	return c, nil
}
func (b *plainBackend) Secret(context.Context, string, string, string) (map[string]string, error) {
	return b.secrets, nil
}

// TestExampleHandlers logs bob in with the example's Go create (password and TOTP),
// checks the captured state with its Go check and reads the account name.
func TestExampleHandlers(t *testing.T) {
	_, base := portaltest.Start(t, portal.Config{})
	b := &plainBackend{vars: map[string]string{"baseURL": base},
		secrets: map[string]string{"username": "bob", "password": portal.BobPassword, "totp_secret": portal.BobTOTPSecret}}
	r, err := newRunner(runner.Config{Pool: "example", ChromiumPath: testkit.ChromiumPath(t)}, runner.Deps{States: b, Vault: b})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	session := &runnerv1.SessionRef{AuthSessionId: "s1", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS}
	create := r.Execute(t.Context(), &runnerv1.RunnerTask{TaskId: "t1", RunId: "r1", ProjectId: "p", Kind: runnerv1.TaskKind_TASK_KIND_CREATE,
		Api: recipe.CreateAPI, Session: session, Credentials: &runnerv1.CredentialsRef{Source: &runnerv1.CredentialsRef_SecretId{SecretId: "session-s1"}}})
	if create.GetStatus() != runnerv1.TaskStatus_TASK_STATUS_SUCCEEDED {
		t.Fatalf("create: %s %s", create.GetStatus(), create.GetFailureMessage())
	}
	b.state = create.GetCapturedStateCiphertext()
	session.StateRevision = 1
	res := r.Execute(t.Context(), &runnerv1.RunnerTask{TaskId: "t2", RunId: "r2", ProjectId: "p", Kind: runnerv1.TaskKind_TASK_KIND_API,
		Api: "account-name", Session: session, CheckFirst: true, FreshContext: true})
	if res.GetCheckOutcome() != latchkeyv1.CheckOutcome_CHECK_OUTCOME_VALID || res.GetStatus() != runnerv1.TaskStatus_TASK_STATUS_SUCCEEDED {
		t.Fatalf("account-name: %s %s %s", res.GetCheckOutcome(), res.GetStatus(), res.GetFailureMessage())
	}
	if got := res.GetOutput().GetStructValue().GetFields()["account"].GetStringValue(); got != "bob" {
		t.Errorf("account %q, want bob", got)
	}
	b.secrets["password"] = "wrong"
	bad := r.Execute(t.Context(), &runnerv1.RunnerTask{TaskId: "t3", RunId: "r3", ProjectId: "p", Kind: runnerv1.TaskKind_TASK_KIND_CREATE,
		Api: recipe.CreateAPI, Session: session, Credentials: &runnerv1.CredentialsRef{Source: &runnerv1.CredentialsRef_SecretId{SecretId: "session-s1"}}})
	if bad.GetFailureReason() != latchkeyv1.FailureReason_FAILURE_REASON_INVALID_CREDENTIALS {
		t.Errorf("wrong password: %s %s", bad.GetFailureReason(), bad.GetFailureMessage())
	}
}
