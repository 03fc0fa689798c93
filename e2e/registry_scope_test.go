package e2e

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
)

// TestRegistryCrossProjectAccessRefused calls every public RPC with project bravo's
// key on project acme's ids: each answers NotFound (or PermissionDenied for the
// admin-only RPCs), lists show nothing of acme, and nothing of acme changes.
func TestRegistryCrossProjectAccessRefused(t *testing.T) {
	t.Parallel()
	r := startRegistry(t, stacktest.Options{})
	ctx := t.Context()
	acme := r.newProject(t, "acme")
	bravo := r.newProject(t, "bravo")
	acme.deployPortal(t)
	bravo.deployPortal(t)
	if _, err := acme.automations.DeployBundle(ctx, &latchkeyv1.DeployBundleRequest{Site: "acme-crm", Files: regPortalFiles(t)}); err != nil {
		t.Fatal(err)
	}
	acme.createSession(t, &latchkeyv1.CreateAuthSessionRequest{AuthSessionId: "s1", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Credentials: map[string]string{"username": "a", "password": "acme-pw"}})
	if _, err := acme.sessions.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "s1", StorageStateJson: []byte(regPlaywrightState)}); err != nil {
		t.Fatal(err)
	}
	keys, err := acme.projects.ListApiKeys(ctx, &latchkeyv1.ListApiKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	acmeKeyID := keys.GetApiKeys()[0].GetId()
	// bravo gets an "s1" of its own (CreateAuthSession below), so the session RPCs aim
	// at "s1x", an id only acme has.
	if _, err := acme.sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{AuthSessionId: "s1x", Type: latchkeyv1.SessionType_SESSION_TYPE_RECORDER, Recorder: &latchkeyv1.RecorderSettings{StartUrl: "http://x/login"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.sessions.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "s1x", StorageStateJson: []byte(regPlaywrightState)}); err != nil {
		t.Fatal(err)
	}
	s1x, err := r.internal.GetSession(ctx, &registryv1.GetSessionRequest{ProjectId: "acme", AuthSessionId: "s1x"})
	if err != nil {
		t.Fatal(err)
	}
	acmePage, err := acme.sessions.ListAuthSessions(ctx, &latchkeyv1.ListAuthSessionsRequest{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	before, err := r.internal.GetSession(ctx, &registryv1.GetSessionRequest{ProjectId: "acme", AuthSessionId: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	mask := &fieldmaskpb.FieldMask{Paths: []string{"display_name"}}
	b := bravo

	cases := []struct {
		rpc  string
		call func(context.Context) error
		want codes.Code
	}{
		// ProjectService
		{"CreateProject", func(ctx context.Context) error {
			_, err := b.projects.CreateProject(ctx, &latchkeyv1.CreateProjectRequest{ProjectId: "acme2"})
			return err
		}, codes.PermissionDenied},
		{"GetProject", func(ctx context.Context) error {
			_, err := b.projects.GetProject(ctx, &latchkeyv1.GetProjectRequest{ProjectId: "acme"})
			return err
		}, codes.NotFound},
		{"ListProjects", func(ctx context.Context) error {
			_, err := b.projects.ListProjects(ctx, &latchkeyv1.ListProjectsRequest{})
			return err
		}, codes.PermissionDenied},
		{"DeleteProject", func(ctx context.Context) error {
			_, err := b.projects.DeleteProject(ctx, &latchkeyv1.DeleteProjectRequest{ProjectId: "acme"})
			return err
		}, codes.PermissionDenied},
		{"CreateApiKey", func(ctx context.Context) error {
			_, err := b.projects.CreateApiKey(ctx, &latchkeyv1.CreateApiKeyRequest{ProjectId: "acme"})
			return err
		}, codes.NotFound},
		{"ListApiKeys", func(ctx context.Context) error {
			_, err := b.projects.ListApiKeys(ctx, &latchkeyv1.ListApiKeysRequest{ProjectId: "acme"})
			return err
		}, codes.NotFound},
		{"RevokeApiKey by project", func(ctx context.Context) error {
			_, err := b.projects.RevokeApiKey(ctx, &latchkeyv1.RevokeApiKeyRequest{ProjectId: "acme", ApiKeyId: acmeKeyID})
			return err
		}, codes.NotFound},
		{"RevokeApiKey by key id", func(ctx context.Context) error {
			_, err := b.projects.RevokeApiKey(ctx, &latchkeyv1.RevokeApiKeyRequest{ApiKeyId: acmeKeyID})
			return err
		}, codes.NotFound},
		{"ListAuditEntries", func(ctx context.Context) error {
			resp, err := b.projects.ListAuditEntries(ctx, &latchkeyv1.ListAuditEntriesRequest{ResourceId: "s1"})
			return regEmptyOr(err, len(resp.GetEntries()))
		}, codes.OK},
		// AutomationService
		{"DeployBundle", func(ctx context.Context) error {
			resp, err := b.automations.DeployBundle(ctx, &latchkeyv1.DeployBundleRequest{Files: regPortalFiles(t)})
			if err == nil && resp.GetBundle().GetProjectId() != "bravo" {
				return status.Error(codes.Internal, "deployed into another project")
			}
			return err
		}, codes.OK},
		{"GetBundle", func(ctx context.Context) error {
			_, err := b.automations.GetBundle(ctx, &latchkeyv1.GetBundleRequest{Version: 99})
			return err
		}, codes.NotFound},
		{"ListBundles", func(ctx context.Context) error {
			resp, err := b.automations.ListBundles(ctx, &latchkeyv1.ListBundlesRequest{})
			for _, bd := range resp.GetBundles() {
				if bd.GetProjectId() != "bravo" {
					return status.Error(codes.Internal, "listed another project's bundle")
				}
			}
			return err
		}, codes.OK},
		{"ListAutomations", func(ctx context.Context) error {
			_, err := b.automations.ListAutomations(ctx, &latchkeyv1.ListAutomationsRequest{})
			return err
		}, codes.OK},
		{"ListAutomations of acme's site", func(ctx context.Context) error {
			resp, err := b.automations.ListAutomations(ctx, &latchkeyv1.ListAutomationsRequest{Site: "acme-crm"})
			if len(resp.GetAutomations()) > 0 {
				return status.Error(codes.Internal, "listed another project's site")
			}
			return err
		}, codes.OK},
		{"ListSites", func(ctx context.Context) error {
			resp, err := b.automations.ListSites(ctx, &latchkeyv1.ListSitesRequest{})
			if len(resp.GetSites()) != 1 || resp.GetSites()[0].GetName() != "default" {
				return status.Errorf(codes.Internal, "bravo's sites are %v: another project's site shows", resp.GetSites())
			}
			return err
		}, codes.OK},
		// AuthSessionService
		{"CreateAuthSession", func(ctx context.Context) error {
			resp, err := b.sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{AuthSessionId: "s1", Type: latchkeyv1.SessionType_SESSION_TYPE_RUNTIME, Credentials: map[string]string{"u": "b"}})
			if err == nil && resp.GetAuthSession().GetProjectId() != "bravo" {
				return status.Error(codes.Internal, "created in another project")
			}
			return err
		}, codes.OK},
		{"GetAuthSession", func(ctx context.Context) error {
			_, err := b.sessions.GetAuthSession(ctx, &latchkeyv1.GetAuthSessionRequest{AuthSessionId: "s1x"})
			return err
		}, codes.NotFound},
		{"ListAuthSessions", func(ctx context.Context) error {
			resp, err := b.sessions.ListAuthSessions(ctx, &latchkeyv1.ListAuthSessionsRequest{})
			for _, s := range resp.GetAuthSessions() {
				if s.GetProjectId() != "bravo" {
					return status.Error(codes.Internal, "listed another project's session")
				}
			}
			return err
		}, codes.OK},
		{"ListAuthSessions with acme's page token", func(ctx context.Context) error {
			_, err := b.sessions.ListAuthSessions(ctx, &latchkeyv1.ListAuthSessionsRequest{PageToken: acmePage.GetPageInfo().GetNextPageToken()})
			return err
		}, codes.InvalidArgument},
		{"UpdateAuthSession", func(ctx context.Context) error {
			_, err := b.sessions.UpdateAuthSession(ctx, &latchkeyv1.UpdateAuthSessionRequest{AuthSession: &latchkeyv1.AuthSession{Id: "s1x", DisplayName: "x"}, UpdateMask: mask})
			return err
		}, codes.NotFound},
		{"UpdateAuthSessionCredentials", func(ctx context.Context) error {
			_, err := b.sessions.UpdateAuthSessionCredentials(ctx, &latchkeyv1.UpdateAuthSessionCredentialsRequest{AuthSessionId: "s1x", Credentials: map[string]string{"p": "x"}})
			return err
		}, codes.NotFound},
		{"ImportStorageState", func(ctx context.Context) error {
			_, err := b.sessions.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "s1x", StorageStateJson: []byte(regPlaywrightState)})
			return err
		}, codes.NotFound},
		{"ExportStorageState", func(ctx context.Context) error {
			_, err := b.sessions.ExportStorageState(ctx, &latchkeyv1.ExportStorageStateRequest{AuthSessionId: "s1x"})
			return err
		}, codes.NotFound},
		{"CreateRecorderUrl", func(ctx context.Context) error {
			_, err := b.sessions.CreateRecorderUrl(ctx, &latchkeyv1.CreateRecorderUrlRequest{AuthSessionId: "s1x"})
			return err
		}, codes.NotFound},
		{"DeleteAuthSession", func(ctx context.Context) error {
			_, err := b.sessions.DeleteAuthSession(ctx, &latchkeyv1.DeleteAuthSessionRequest{AuthSessionId: "s1x"})
			return err
		}, codes.NotFound},
	}
	for _, tc := range cases {
		t.Run(tc.rpc, func(t *testing.T) {
			err := tc.call(ctx)
			if status.Code(err) != tc.want {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if msg := status.Convert(err).Message(); regContainsAny(msg, "acme-pw", "COOKIE", acme.key) {
				t.Fatalf("the error leaks acme's data: %s", msg)
			}
		})
	}

	// Nothing of acme changed.
	for id, etag := range map[string]uint64{"s1": before.GetAuthSession().GetEtag(), "s1x": s1x.GetAuthSession().GetEtag()} {
		after, err := r.internal.GetSession(ctx, &registryv1.GetSessionRequest{ProjectId: "acme", AuthSessionId: id})
		if err != nil || after.GetAuthSession().GetEtag() != etag {
			t.Errorf("acme's session %s changed: %v, %v", id, after, err)
		}
	}
	if _, err := acme.projects.GetProject(ctx, &latchkeyv1.GetProjectRequest{}); err != nil {
		t.Errorf("acme's key stopped working: %v", err)
	}
	bundles, err := acme.automations.ListBundles(ctx, &latchkeyv1.ListBundlesRequest{})
	if err != nil || len(bundles.GetBundles()) != 1 {
		t.Errorf("acme's bundles: %v, %v", bundles, err)
	}
	sec, err := r.vault.GetSecret(ctx, &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: "session-s1", Reason: &vaultv1.AccessReason{Purpose: "test"}})
	if err != nil || sec.GetFields()["password"] != "acme-pw" {
		t.Errorf("acme's credentials: %v", err)
	}
}

func regEmptyOr(err error, n int) error {
	if err == nil && n > 0 {
		return status.Errorf(codes.Internal, "%d entries of another project", n)
	}
	return err
}

func regContainsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if sub != "" && len(s) > 0 && strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
