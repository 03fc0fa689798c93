package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/libs/testkit"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testkit.LibraryGoroutines()...) }

// keys is a tiny in-test key store: one valid project key.
type keys struct{}

func (keys) VerifyAPIKey(_ context.Context, key string) (server.Principal, error) {
	if key == "lk_good" {
		return server.Principal{ProjectID: "acme", KeyID: "k1"}, nil
	}
	return server.Principal{}, server.ErrUnknownKey
}

// projects answers GetProject with the caller's project, so a test sees the principal.
type projects struct {
	latchkeyv1.UnimplementedProjectServiceServer
}

func (projects) GetProject(ctx context.Context, _ *latchkeyv1.GetProjectRequest) (*latchkeyv1.GetProjectResponse, error) {
	p, _ := server.PrincipalFrom(ctx)
	if p.ProjectID == "boom" {
		panic("boom")
	}
	return &latchkeyv1.GetProjectResponse{Project: &latchkeyv1.Project{Id: p.ProjectID}}, nil
}

type vault struct {
	vaultv1.UnimplementedVaultServiceServer
}

func (vault) KeyStatus(ctx context.Context, _ *vaultv1.KeyStatusRequest) (*vaultv1.KeyStatusResponse, error) {
	return &vaultv1.KeyStatusResponse{CurrentVersion: 1}, nil
}

type stack struct {
	srv                 *server.Server
	publicSpans, vSpans *tracetest.InMemoryExporter
}

func newStack(t *testing.T) stack {
	t.Helper()
	st := stack{publicSpans: tracetest.NewInMemoryExporter(), vSpans: tracetest.NewInMemoryExporter()}
	tpA := sdktrace.NewTracerProvider(sdktrace.WithSyncer(st.publicSpans))
	tpB := sdktrace.NewTracerProvider(sdktrace.WithSyncer(st.vSpans))
	t.Cleanup(func() { _ = tpA.Shutdown(context.Background()); _ = tpB.Shutdown(context.Background()) })
	st.srv = server.NewForTests(t, server.NewAuthenticator("internal-secret", "admin-secret", keys{}))
	st.srv.Register(&latchkeyv1.ProjectService_ServiceDesc, projects{}, server.PolicyPublic, tpA)
	st.srv.Register(&vaultv1.VaultService_ServiceDesc, vault{}, server.PolicyInternal, tpB)
	if err := st.srv.Start(); err != nil {
		t.Fatal(err)
	}
	return st
}

func dial(t *testing.T, addr, token string) *grpc.ClientConn {
	t.Helper()
	cc, err := server.Dial(addr, server.DialOptions{Token: token, Service: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestAuthPolicies(t *testing.T) {
	st := newStack(t)
	addr := st.srv.GRPCAddr()
	cases := []struct {
		name         string
		token        string
		publicCode   codes.Code
		internalCode codes.Code
	}{
		{"no credentials", "", codes.Unauthenticated, codes.Unauthenticated},
		{"project key", "lk_good", codes.OK, codes.PermissionDenied},
		{"revoked key", "lk_revoked", codes.Unauthenticated, codes.PermissionDenied},
		{"not a key", "hello", codes.Unauthenticated, codes.PermissionDenied},
		{"admin key", "admin-secret", codes.OK, codes.PermissionDenied},
		{"internal token", "internal-secret", codes.OK, codes.OK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cc := dial(t, addr, tc.token)
			_, err := latchkeyv1.NewProjectServiceClient(cc).GetProject(t.Context(), &latchkeyv1.GetProjectRequest{})
			if got := status.Code(err); got != tc.publicCode {
				t.Errorf("public: got %v (%v), want %v", got, err, tc.publicCode)
			}
			_, err = vaultv1.NewVaultServiceClient(cc).KeyStatus(t.Context(), &vaultv1.KeyStatusRequest{})
			if got := status.Code(err); got != tc.internalCode {
				t.Errorf("internal: got %v (%v), want %v", got, err, tc.internalCode)
			}
		})
	}
}

func TestPrincipalReachesHandler(t *testing.T) {
	st := newStack(t)
	resp, err := latchkeyv1.NewProjectServiceClient(dial(t, st.srv.GRPCAddr(), "lk_good")).GetProject(t.Context(), &latchkeyv1.GetProjectRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetProject().GetId() != "acme" {
		t.Fatalf("handler saw project %q, want acme", resp.GetProject().GetId())
	}
}

func TestHealthFollowsServices(t *testing.T) {
	st := newStack(t)
	hc := healthpb.NewHealthClient(dial(t, st.srv.GRPCAddr(), ""))
	check := func(svc string) healthpb.HealthCheckResponse_ServingStatus {
		r, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("health %q: %v", svc, err)
		}
		return r.GetStatus()
	}
	healthz := func() (int, map[string]string) {
		res, err := http.Get("http://" + st.srv.HTTPAddr() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var rep struct{ Services map[string]string }
		if err := json.NewDecoder(res.Body).Decode(&rep); err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, rep.Services
	}
	if got := check(""); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("overall before start = %v", got)
	}
	if code, _ := healthz(); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz before start = %d", code)
	}
	st.srv.SetServing("latchkey.v1.ProjectService", true)
	if got := check("latchkey.v1.ProjectService"); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("project service = %v", got)
	}
	if got := check(""); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("overall with vault down = %v", got)
	}
	st.srv.SetServing("latchkey.vault.v1.VaultService", true)
	if got := check(""); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("overall = %v", got)
	}
	code, svcs := healthz()
	want := map[string]string{"latchkey.v1.ProjectService": "SERVING", "latchkey.vault.v1.VaultService": "SERVING"}
	if code != http.StatusOK || !cmp.Equal(svcs, want) {
		t.Fatalf("/healthz = %d %v", code, svcs)
	}
	res, err := http.Get("http://" + st.srv.HTTPAddr() + "/metrics")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %v %v", err, res)
	}
	res.Body.Close()
}

func TestEachServiceTracesUnderItsOwnProvider(t *testing.T) {
	st := newStack(t)
	cc := dial(t, st.srv.GRPCAddr(), "internal-secret")
	if _, err := latchkeyv1.NewProjectServiceClient(cc).GetProject(t.Context(), &latchkeyv1.GetProjectRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := vaultv1.NewVaultServiceClient(cc).KeyStatus(t.Context(), &vaultv1.KeyStatusRequest{}); err != nil {
		t.Fatal(err)
	}
	// The server ends its span after the response is on the wire, so wait for it.
	names := func(e *tracetest.InMemoryExporter) []string {
		testkit.Eventually(t, 5*time.Second, func() (bool, string) {
			return len(e.GetSpans()) > 0, "no span exported yet"
		})
		var out []string
		for _, s := range e.GetSpans() {
			out = append(out, s.Name)
		}
		return out
	}
	if got := names(st.publicSpans); !cmp.Equal(got, []string{"latchkey.v1.ProjectService/GetProject"}) {
		t.Errorf("project provider spans = %v", got)
	}
	if got := names(st.vSpans); !cmp.Equal(got, []string{"latchkey.vault.v1.VaultService/KeyStatus"}) {
		t.Errorf("vault provider spans = %v", got)
	}
}

type panicKeys struct{}

func (panicKeys) VerifyAPIKey(context.Context, string) (server.Principal, error) {
	return server.Principal{ProjectID: "boom"}, nil
}

func TestPanicBecomesInternal(t *testing.T) {
	srv := server.NewForTests(t, server.NewAuthenticator("", "", panicKeys{}))
	srv.Register(&latchkeyv1.ProjectService_ServiceDesc, projects{}, server.PolicyPublic, sdktrace.NewTracerProvider())
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	_, err := latchkeyv1.NewProjectServiceClient(dial(t, srv.GRPCAddr(), "lk_any")).GetProject(t.Context(), &latchkeyv1.GetProjectRequest{})
	if status.Code(err) != codes.Internal || status.Convert(err).Message() != "internal error" {
		t.Fatalf("got %v, want a generic Internal", err)
	}
	// The server still answers after the panic.
	_, err = latchkeyv1.NewProjectServiceClient(dial(t, srv.GRPCAddr(), "")).GetProject(t.Context(), &latchkeyv1.GetProjectRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("after panic: %v", err)
	}
}
