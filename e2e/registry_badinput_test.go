package e2e

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/storagestate"
)

// TestRegistryRefusesBadInput sends bad ids, oversized states, invalid YAML, unknown
// types and the like: each gets a clear status whose message says what to fix, and
// nothing changes.
func TestRegistryRefusesBadInput(t *testing.T) {
	t.Parallel()
	r := startRegistry(t, stacktest.Options{})
	ctx := t.Context()
	c := r.newProject(t, "acme")

	// Before any bundle, sessions cannot be created.
	_, err := c.sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{Type: latchkeyv1.SessionType_SESSION_TYPE_RUNTIME, Credentials: map[string]string{"u": "x"}})
	regWantCode(t, err, codes.FailedPrecondition)

	c.deployPortal(t)
	c.createSession(t, &latchkeyv1.CreateAuthSessionRequest{AuthSessionId: "s1", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Credentials: map[string]string{"password": "pw"}})
	if _, err := c.sessions.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "s1", StorageStateJson: []byte(regPlaywrightState)}); err != nil {
		t.Fatal(err)
	}
	before, err := r.internal.GetSession(ctx, &registryv1.GetSessionRequest{ProjectId: "acme", AuthSessionId: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	canary := "VALUE-CANARY-7731"
	huge := `{"cookies":[{"name":"a","value":"` + strings.Repeat("v", storagestate.MaxBytes) + `","domain":"x"}],"origins":[]}`
	creds := map[string]string{"password": canary}
	yaml := func(content string) []*latchkeyv1.BundleFile {
		return []*latchkeyv1.BundleFile{{Path: "broken.yaml", Content: []byte(content)}}
	}
	cases := []struct {
		name     string
		call     func(context.Context) error
		code     codes.Code
		mentions string
	}{
		{"session id with upper case", func(ctx context.Context) error {
			_, err := c.sessions.GetAuthSession(ctx, &latchkeyv1.GetAuthSessionRequest{AuthSessionId: "S1"})
			return err
		}, codes.InvalidArgument, "lowercase"},
		{"empty session id", func(ctx context.Context) error {
			_, err := c.sessions.ExportStorageState(ctx, &latchkeyv1.ExportStorageStateRequest{})
			return err
		}, codes.InvalidArgument, "auth session id"},
		{"session id with a dot", func(ctx context.Context) error {
			_, err := c.sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{AuthSessionId: "a.b", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Credentials: creds})
			return err
		}, codes.InvalidArgument, "auth session id"},
		{"project id", func(ctx context.Context) error {
			_, err := r.admin.CreateProject(ctx, &latchkeyv1.CreateProjectRequest{ProjectId: "Acme Inc"})
			return err
		}, codes.InvalidArgument, "project id"},
		{"no session type", func(ctx context.Context) error {
			_, err := c.sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{Credentials: creds})
			return err
		}, codes.InvalidArgument, "type must be"},
		{"unknown session type", func(ctx context.Context) error {
			_, err := c.sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{Type: 42, Credentials: creds})
			return err
		}, codes.InvalidArgument, "type must be"},
		{"credentials missing", func(ctx context.Context) error {
			_, err := c.sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS})
			return err
		}, codes.InvalidArgument, "credentials are required"},
		{"recorder with credentials", func(ctx context.Context) error {
			_, err := c.sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{Type: latchkeyv1.SessionType_SESSION_TYPE_RECORDER, Credentials: creds, Recorder: &latchkeyv1.RecorderSettings{StartUrl: "http://x"}})
			return err
		}, codes.InvalidArgument, "no credentials"},
		{"bad proxy", func(ctx context.Context) error {
			_, err := c.sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Credentials: creds, Proxy: &latchkeyv1.Proxy{Server: "ftp://x"}})
			return err
		}, codes.InvalidArgument, "proxy"},
		{"bad label", func(ctx context.Context) error {
			_, err := c.sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Credentials: creds, Labels: map[string]string{"bad key": "v"}})
			return err
		}, codes.InvalidArgument, "label key"},
		{"unknown state filter", func(ctx context.Context) error {
			_, err := c.sessions.ListAuthSessions(ctx, &latchkeyv1.ListAuthSessionsRequest{States: []latchkeyv1.SessionState{9}})
			return err
		}, codes.InvalidArgument, "not a session state"},
		{"forged page token", func(ctx context.Context) error {
			_, err := c.sessions.ListAuthSessions(ctx, &latchkeyv1.ListAuthSessionsRequest{PageToken: "bm90LWEtdG9rZW4"})
			return err
		}, codes.InvalidArgument, "page_token"},
		{"update without a mask", func(ctx context.Context) error {
			_, err := c.sessions.UpdateAuthSession(ctx, &latchkeyv1.UpdateAuthSessionRequest{AuthSession: &latchkeyv1.AuthSession{Id: "s1"}})
			return err
		}, codes.InvalidArgument, "update_mask"},
		{"update of the type", func(ctx context.Context) error {
			_, err := c.sessions.UpdateAuthSession(ctx, &latchkeyv1.UpdateAuthSessionRequest{AuthSession: &latchkeyv1.AuthSession{Id: "s1", Type: latchkeyv1.SessionType_SESSION_TYPE_RUNTIME}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"type"}}})
			return err
		}, codes.InvalidArgument, "fixed at creation"},
		{"state that is not JSON", func(ctx context.Context) error {
			_, err := c.sessions.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "s1", StorageStateJson: []byte(`{"cookies":[{"name":"a","value":"` + canary + `"`)})
			return err
		}, codes.InvalidArgument, "storageState"},
		{"state with an unknown field", func(ctx context.Context) error {
			_, err := c.sessions.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "s1", StorageStateJson: []byte(`{"cookies":[],"cookie":"` + canary + `"}`)})
			return err
		}, codes.InvalidArgument, "unknown field"},
		{"state with a cookie without domain", func(ctx context.Context) error {
			_, err := c.sessions.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "s1", StorageStateJson: []byte(`{"cookies":[{"name":"a","value":"` + canary + `"}]}`)})
			return err
		}, codes.InvalidArgument, "domain"},
		{"state over the size limit", func(ctx context.Context) error {
			_, err := c.sessions.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "s1", StorageStateJson: []byte(huge)})
			return err
		}, codes.ResourceExhausted, "limit"},
		{"sealed state over the size limit", func(ctx context.Context) error {
			_, err := r.internal.PutStorageState(ctx, &registryv1.PutStorageStateRequest{ProjectId: "acme", AuthSessionId: "s1", BaseRevision: 1, Ciphertext: bytes.Repeat([]byte{1}, storagestate.MaxBytes+100<<10)})
			return err
		}, codes.ResourceExhausted, "at most"},
		{"export of a missing revision", func(ctx context.Context) error {
			_, err := c.sessions.ExportStorageState(ctx, &latchkeyv1.ExportStorageStateRequest{AuthSessionId: "s1", Revision: 99})
			return err
		}, codes.NotFound, "revision 99"},
		{"invalid YAML", func(ctx context.Context) error {
			_, err := c.automations.DeployBundle(ctx, &latchkeyv1.DeployBundleRequest{Files: yaml("apis: [unclosed")})
			return err
		}, codes.InvalidArgument, "broken.yaml"},
		{"unknown step type", func(ctx context.Context) error {
			_, err := c.automations.DeployBundle(ctx, &latchkeyv1.DeployBundleRequest{Files: yaml("apis:\n  auth-sessions/create:\n    steps:\n      - teleport: x\n  auth-sessions/check:\n    steps:\n      - goto: http://x\n")})
			return err
		}, codes.InvalidArgument, "api auth-sessions/create: step 0"},
		{"bundle without create now that sessions exist", func(ctx context.Context) error {
			_, err := c.automations.DeployBundle(ctx, &latchkeyv1.DeployBundleRequest{Files: yaml("apis:\n  ping:\n    steps:\n      - goto: http://x\n")})
			return err
		}, codes.InvalidArgument, "auth-sessions/create"},
		{"transition to PENDING", func(ctx context.Context) error {
			_, err := r.internal.TransitionSession(ctx, &registryv1.TransitionSessionRequest{ProjectId: "acme", AuthSessionId: "s1", ExpectedEtag: before.GetAuthSession().GetEtag(), ToState: latchkeyv1.SessionState_SESSION_STATE_PENDING})
			return err
		}, codes.InvalidArgument, "to_state"},
		{"transition with an origin that is not an origin", func(ctx context.Context) error {
			_, err := r.internal.TransitionSession(ctx, &registryv1.TransitionSessionRequest{ProjectId: "acme", AuthSessionId: "s1", ExpectedEtag: before.GetAuthSession().GetEtag(),
				ToState: latchkeyv1.SessionState_SESSION_STATE_READY, Origins: []string{"https://ok.example", "https://x.example/path?" + canary}})
			return err
		}, codes.InvalidArgument, "origins[1]"},
		{"internal call with a bad project id", func(ctx context.Context) error {
			_, err := r.internal.GetBundle(ctx, &registryv1.GetBundleRequest{ProjectId: "acme.head"})
			return err
		}, codes.InvalidArgument, "project id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(ctx)
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.mentions) {
				t.Fatalf("got %v, want %v mentioning %q", err, tc.code, tc.mentions)
			}
			if strings.Contains(st.Message(), canary) {
				t.Fatalf("the message quotes a secret value: %s", st.Message())
			}
		})
	}

	after, err := r.internal.GetSession(ctx, &registryv1.GetSessionRequest{ProjectId: "acme", AuthSessionId: "s1"})
	if err != nil || after.GetAuthSession().GetEtag() != before.GetAuthSession().GetEtag() {
		t.Errorf("the session changed: %v, %v", after, err)
	}
	list, err := c.sessions.ListAuthSessions(ctx, &latchkeyv1.ListAuthSessionsRequest{})
	if err != nil || len(list.GetAuthSessions()) != 1 {
		t.Errorf("sessions after refused creates: %v, %v", list, err)
	}
	bundles, err := c.automations.ListBundles(ctx, &latchkeyv1.ListBundlesRequest{})
	if err != nil || len(bundles.GetBundles()) != 1 {
		t.Errorf("bundles after refused deploys: %v, %v", bundles, err)
	}
	projects, err := r.admin.ListProjects(ctx, &latchkeyv1.ListProjectsRequest{})
	if err != nil || len(projects.GetProjects()) != 1 {
		t.Errorf("projects after a refused create: %v, %v", projects, err)
	}
}
