package registry

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/logging"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/libs/testkit"
	"github.com/latchkey/latchkey/services/session-registry/internal/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testkit.LibraryGoroutines()...)
}

const (
	internalToken = "registry-test-internal-token"
	adminKey      = "lk_admin_registry_test"
)

// started is a registry serving on its own server over a real NATS server. Its vault
// and scheduler clients point at the same server, which does not serve them: these
// tests exercise only what needs neither.
type started struct {
	svc *Service
	srv *server.Server
}

func start(t *testing.T) started {
	t.Helper()
	_, nc, js := testkit.NATS(t)
	auth := server.NewAuthenticator(internalToken, adminKey, nil)
	srv := server.NewForTests(t, auth)
	cc := dial(t, srv.GRPCAddr(), internalToken)
	svc, err := New(Config{AdminKey: adminKey, InternalToken: internalToken}, Deps{
		Logger: logging.Discard(), Tracer: noop.NewTracerProvider(), JS: js, NC: nc,
		Vault: vaultv1.NewVaultServiceClient(cc), Runs: latchkeyv1.NewRunServiceClient(cc),
	})
	if err != nil {
		t.Fatal(err)
	}
	svc.Register(srv)
	auth.SetKeyVerifier(svc.KeyVerifier())
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	return started{svc: svc, srv: srv}
}

func dial(t *testing.T, addr, token string) *grpc.ClientConn {
	t.Helper()
	cc, err := server.Dial(addr, server.DialOptions{Token: token, Service: "registry-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestNewNeedsItsDependencies(t *testing.T) {
	if _, err := New(Config{}, Deps{}); err == nil {
		t.Fatal("New accepted missing dependencies")
	}
}

// TestProjectKeysAuthenticate walks a key's life through the server's authenticator:
// created by the admin, accepted for its own project only, refused once revoked.
func TestProjectKeysAuthenticate(t *testing.T) {
	s := start(t)
	ctx := t.Context()
	admin := latchkeyv1.NewProjectServiceClient(dial(t, s.srv.GRPCAddr(), adminKey))
	created, err := admin.CreateProject(ctx, &latchkeyv1.CreateProjectRequest{ProjectId: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	key := created.GetApiKeySecret()
	pc := latchkeyv1.NewProjectServiceClient(dial(t, s.srv.GRPCAddr(), key))
	got, err := pc.GetProject(ctx, &latchkeyv1.GetProjectRequest{})
	if err != nil || got.GetProject().GetId() != "acme" {
		t.Fatalf("GetProject with the project's key = %v, %v", got, err)
	}
	if _, err := pc.ListProjects(ctx, &latchkeyv1.ListProjectsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("ListProjects with a project key: %v", err)
	}
	if _, err := pc.RevokeApiKey(ctx, &latchkeyv1.RevokeApiKeyRequest{ApiKeyId: created.GetApiKey().GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.GetProject(ctx, &latchkeyv1.GetProjectRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("revoked key: %v", err)
	}
	internal := registryv1.NewSessionStateServiceClient(dial(t, s.srv.GRPCAddr(), internalToken))
	if r, err := internal.AuthenticateApiKey(ctx, &registryv1.AuthenticateApiKeyRequest{ApiKey: adminKey}); err != nil || !r.GetAdmin() {
		t.Fatalf("AuthenticateApiKey(admin) = %v, %v", r, err)
	}
	if _, err := internal.AuthenticateApiKey(ctx, &registryv1.AuthenticateApiKeyRequest{ApiKey: key}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("AuthenticateApiKey(revoked) = %v", err)
	}
	// The internal API refuses the admin key.
	c := registryv1.NewSessionStateServiceClient(dial(t, s.srv.GRPCAddr(), adminKey))
	if _, err := c.GetSession(ctx, &registryv1.GetSessionRequest{ProjectId: "acme", AuthSessionId: "x"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("internal API with the admin key: %v", err)
	}
}

// TestRemoteKeyVerifierCaches checks the verifier of processes without the registry:
// it asks AuthenticateApiKey, trusts a valid key for PositiveTTL and refuses an
// unknown one for NegativeTTL without asking again.
func TestRemoteKeyVerifierCaches(t *testing.T) {
	s := start(t)
	ctx := t.Context()
	admin := latchkeyv1.NewProjectServiceClient(dial(t, s.srv.GRPCAddr(), adminKey))
	created, err := admin.CreateProject(ctx, &latchkeyv1.CreateProjectRequest{ProjectId: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	calls := 0
	client := countingClient{registryv1.NewSessionStateServiceClient(dial(t, s.srv.GRPCAddr(), internalToken)), &calls}
	v := NewRemoteKeyVerifier(client, RemoteVerifierOptions{PositiveTTL: 30 * time.Second, NegativeTTL: 5 * time.Second, Now: clock})

	p, err := v.VerifyAPIKey(ctx, created.GetApiKeySecret())
	if err != nil || p.ProjectID != "acme" || p.KeyID != created.GetApiKey().GetId() {
		t.Fatalf("VerifyAPIKey = %+v, %v", p, err)
	}
	if _, err := v.VerifyAPIKey(ctx, "lk_unknownunknownxx_x"); !errors.Is(err, server.ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := admin.RevokeApiKey(ctx, &latchkeyv1.RevokeApiKeyRequest{ProjectId: "acme", ApiKeyId: created.GetApiKey().GetId()}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := v.VerifyAPIKey(ctx, created.GetApiKeySecret()); err != nil {
			t.Fatalf("within the positive TTL: %v", err)
		}
		if _, err := v.VerifyAPIKey(ctx, "lk_unknownunknownxx_x"); !errors.Is(err, server.ErrUnknownKey) {
			t.Fatalf("within the negative TTL: %v", err)
		}
	}
	if calls != 2 {
		t.Fatalf("%d calls to the registry, want 2 (answers cached)", calls)
	}
	now = now.Add(31 * time.Second)
	if _, err := v.VerifyAPIKey(ctx, created.GetApiKeySecret()); !errors.Is(err, server.ErrUnknownKey) {
		t.Fatalf("revoked key after the positive TTL: %v", err)
	}
	if a, err := v.VerifyAPIKey(ctx, adminKey); err != nil || !a.Admin {
		t.Fatalf("admin key = %+v, %v", a, err)
	}
}

type countingClient struct {
	registryv1.SessionStateServiceClient
	calls *int
}

func (c countingClient) AuthenticateApiKey(ctx context.Context, in *registryv1.AuthenticateApiKeyRequest, opts ...grpc.CallOption) (*registryv1.AuthenticateApiKeyResponse, error) {
	*c.calls++
	return c.SessionStateServiceClient.AuthenticateApiKey(ctx, in, opts...)
}

// TestStateOptionsReachTheStore: the registry's own state options are the store's, and
// the defaults its doc comments promise are the store's defaults.
func TestStateOptionsReachTheStore(t *testing.T) {
	t.Parallel()
	got := StateOptions{CacheTTL: time.Second, InlineMaxBytes: 7, KeepRevisions: 2}.storeOptions()
	if got.StateCacheTTL != time.Second || got.InlineMaxBytes != 7 || got.KeepRevisions != 2 || got.Now != nil {
		t.Errorf("store options = %+v", got)
	}
	if store.DefaultStateCacheTTL != 5*time.Minute || store.DefaultInlineMaxBytes != 256<<10 || store.DefaultKeepRevisions != 3 {
		t.Error("the store's defaults changed: update the doc comments of StateOptions")
	}
}
