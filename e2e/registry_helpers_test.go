package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/server"
)

// schedulerStandIn stands in for the scheduler (issue 7) in the registry's end-to-end
// tests: a gRPC server whose RunService.StartRun records each request, with the
// project and caller it came with, and answers a new Run id (or a chosen failure).
type schedulerStandIn struct {
	latchkeyv1.UnimplementedRunServiceServer
	addr string

	mu     sync.Mutex
	starts []regStartedRun
	fail   error
}

// regStartedRun is one StartRun the stand-in received.
type regStartedRun struct {
	req     *latchkeyv1.StartRunRequest
	project string // from x-latchkey-project
	caller  string // from x-latchkey-service
	id      string
}

func newSchedulerStandIn(t testing.TB) *schedulerStandIn {
	t.Helper()
	lis, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &schedulerStandIn{addr: lis.Addr().String()}
	g := grpc.NewServer()
	latchkeyv1.RegisterRunServiceServer(g, s)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return s
}

// StartRun records the request and answers a Run id, or the failure set by failWith.
func (s *schedulerStandIn) StartRun(ctx context.Context, req *latchkeyv1.StartRunRequest) (*latchkeyv1.StartRunResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	first := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	r := regStartedRun{req: proto.CloneOf(req), project: first(server.ProjectHeader), caller: first(server.ServiceHeader), id: fmt.Sprintf("run-%d", len(s.starts)+1)}
	s.starts = append(s.starts, r)
	return &latchkeyv1.StartRunResponse{Run: &latchkeyv1.Run{Id: r.id, Kind: req.GetKind(), AuthSessionId: req.GetAuthSessionId(), ProjectId: r.project}}, nil
}

func (s *schedulerStandIn) failWith(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

func (s *schedulerStandIn) runs() []regStartedRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]regStartedRun(nil), s.starts...)
}

// registryStack is a stack of the vault and the registry, with the scheduler stand-in.
type registryStack struct {
	*stacktest.Stack
	sched    *schedulerStandIn
	admin    latchkeyv1.ProjectServiceClient
	internal registryv1.SessionStateServiceClient
	vault    vaultv1.VaultServiceClient
}

func startRegistry(t testing.TB, opts stacktest.Options) *registryStack {
	t.Helper()
	sched := newSchedulerStandIn(t)
	opts.Services = []string{"vault", "registry"}
	opts.Args = append(opts.Args, "-scheduler-addr", sched.addr)
	st := stacktest.Start(t, opts)
	internal := st.Dial(t, st.InternalToken)
	return &registryStack{
		Stack: st, sched: sched,
		admin:    latchkeyv1.NewProjectServiceClient(st.Dial(t, st.AdminKey)),
		internal: registryv1.NewSessionStateServiceClient(internal),
		vault:    vaultv1.NewVaultServiceClient(internal),
	}
}

// client is a project's view of the public API, through one of its keys.
type regClient struct {
	project     string
	key         string
	projects    latchkeyv1.ProjectServiceClient
	automations latchkeyv1.AutomationServiceClient
	sessions    latchkeyv1.AuthSessionServiceClient
}

// newProject creates a project with the admin key and returns a client with its key.
func (r *registryStack) newProject(t testing.TB, id string) *regClient {
	t.Helper()
	resp, err := r.admin.CreateProject(t.Context(), &latchkeyv1.CreateProjectRequest{ProjectId: id, DisplayName: "Project " + id})
	if err != nil {
		t.Fatalf("creating project %s: %v", id, err)
	}
	return r.clientFor(t, id, resp.GetApiKeySecret())
}

func (r *registryStack) clientFor(t testing.TB, project, key string) *regClient {
	cc := r.Dial(t, key)
	return &regClient{
		project: project, key: key,
		projects:    latchkeyv1.NewProjectServiceClient(cc),
		automations: latchkeyv1.NewAutomationServiceClient(cc),
		sessions:    latchkeyv1.NewAuthSessionServiceClient(cc),
	}
}

// regPortalFiles reads the demo portal's recipe bundle.
func regPortalFiles(t testing.TB) []*latchkeyv1.BundleFile {
	t.Helper()
	dir := filepath.Join("..", "examples", "portal", "automations")
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("reading %s: %v", dir, err)
	}
	var files []*latchkeyv1.BundleFile
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, &latchkeyv1.BundleFile{Path: filepath.Base(p), Content: b})
	}
	return files
}

func (c *regClient) deployPortal(t testing.TB) *latchkeyv1.Bundle {
	t.Helper()
	resp, err := c.automations.DeployBundle(t.Context(), &latchkeyv1.DeployBundleRequest{Files: regPortalFiles(t)})
	if err != nil {
		t.Fatalf("deploying the portal bundle: %v", err)
	}
	return resp.GetBundle()
}

func (c *regClient) createSession(t testing.TB, req *latchkeyv1.CreateAuthSessionRequest) *latchkeyv1.CreateAuthSessionResponse {
	t.Helper()
	resp, err := c.sessions.CreateAuthSession(t.Context(), req)
	if err != nil {
		t.Fatalf("creating session %q: %v", req.GetAuthSessionId(), err)
	}
	return resp
}

// regWantCode fails unless err has code.
func regWantCode(t testing.TB, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want %v", err, code)
	}
}

const regPlaywrightState = `{
  "cookies": [
    {"name": "sid", "value": "COOKIE", "domain": "127.0.0.1", "path": "/", "expires": 1893456000, "httpOnly": true, "secure": false, "sameSite": "Lax"}
  ],
  "origins": [
    {"origin": "http://127.0.0.1:7490", "localStorage": [{"name": "apiToken", "value": "tok-1"}]}
  ]
}`
