//go:build chaos

package chaos

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/latchkey/latchkey/examples/portal"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/testkit"
)

const (
	project = "chaos"
	// startTimeout bounds one process's start-up until healthy: generous, for a
	// machine whose two cores other suites share.
	startTimeout = 90 * time.Second
	// restartDelay is how long a killed process stays down.
	restartDelay = 3 * time.Second
)

// world is a Latchkey deployment of real processes, and a project with the portal's
// bundle and one READY session, driven over gRPC and NATS as users drive it.
type world struct {
	t   *testing.T
	dir string // logs and data of every process

	nats      []*proc
	natsPorts []int // client port of each node
	natsURL   string
	redis     *testkit.RedisServer
	portal    *proc
	portalURL string
	vault     *proc
	registry  *proc
	scheds    []*proc
	runners   []*proc
	grpcAddr  map[*proc]string
	all       []*proc // in start order

	internalToken, adminKey, apiKey string

	runs     latchkeyv1.RunServiceClient // both schedulers, round robin
	sessions latchkeyv1.AuthSessionServiceClient
	nc       *nats.Conn
	js       jetstream.JetStream
	session  string

	mu       sync.Mutex
	timeline []string // what the test did to the world, when
}

// newWorld starts three NATS nodes, Redis, the portal, the vault, the registry, two
// schedulers and two runners, then creates the project, deploys the bundle and logs
// a session in. Everything stops when the test ends; on failure the end of every
// process's log is printed.
func newWorld(t *testing.T) *world {
	t.Helper()
	start := time.Now()
	w := &world{t: t, dir: t.ArtifactDir(), grpcAddr: map[*proc]string{}}
	w.internalToken, w.adminKey = "chaos-internal-"+randomText(), "lk_admin_chaos_"+randomText()
	t.Cleanup(w.report)

	w.startNATS()
	w.redis = testkit.Redis(t)
	w.startPortal()
	chromium := testkit.ChromiumPath(t)
	w.vault = w.service("vault", nil)
	w.registry = w.service("registry", nil)
	w.scheds = []*proc{w.service("scheduler-1", nil), w.service("scheduler-2", nil)}
	for i := range 2 {
		w.runners = append(w.runners, w.service("runner-"+strconv.Itoa(i+1), map[string]string{"LATCHKEY_CHROMIUM_PATH": chromium}))
	}
	peers := []string{
		"LATCHKEY_VAULT_ADDR=" + w.grpcAddr[w.vault],
		"LATCHKEY_REGISTRY_ADDR=" + w.grpcAddr[w.registry],
		// The registry starts a new session's create Run through scheduler-1.
		"LATCHKEY_SCHEDULER_ADDR=" + w.grpcAddr[w.scheds[0]],
	}
	for p := range w.grpcAddr {
		p.env = append(p.env, peers...)
	}
	// The order of stack.ServiceNames: the vault first, the runners last.
	w.launch(w.vault, w.registry)
	w.launch(w.scheds...)
	w.launch(w.runners...)
	w.connect()
	w.setUp()
	w.note("world ready in %s (3 NATS nodes, Redis, portal, vault, registry, 2 schedulers, 2 runners)", time.Since(start).Round(time.Millisecond))
	return w
}

// note records what happened, with the time, for the log and the failure report.
func (w *world) note(format string, args ...any) {
	line := time.Now().Format("15:04:05.000") + " " + fmt.Sprintf(format, args...)
	w.mu.Lock()
	w.timeline = append(w.timeline, line)
	w.mu.Unlock()
	w.t.Log(line)
}

// startNATS starts three nodes routed to each other as one JetStream cluster.
func (w *world) startNATS() {
	t := w.t
	const nodes = 3
	client, cluster, monitor := make([]int, nodes), make([]int, nodes), make([]int, nodes)
	for i := range nodes {
		client[i], cluster[i], monitor[i] = freePort(t), freePort(t), freePort(t)
	}
	var routes, urls []string
	for i := range nodes {
		routes = append(routes, strconv.Quote("nats-route://"+addr(cluster[i])))
		urls = append(urls, "nats://"+addr(client[i]))
	}
	for i := range nodes {
		name := "nats-" + strconv.Itoa(i+1)
		dir := filepath.Join(w.dir, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		conf := fmt.Sprintf(`server_name: %q
listen: %q
http: %q
jetstream {
  store_dir: %q
  max_memory_store: 256MB
  max_file_store: 2GB
}
cluster {
  name: "latchkey-chaos"
  listen: %q
  routes: [%s]
}
`, name, addr(client[i]), addr(monitor[i]), filepath.Join(dir, "store"), addr(cluster[i]), strings.Join(routes, ", "))
		confPath := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		p := &proc{
			name: name, path: bins.nats, args: []string{"-c", confPath},
			env: []string{"PATH=" + os.Getenv("PATH")}, logPath: filepath.Join(w.dir, name+".log"),
			healthy: httpOK("http://" + addr(monitor[i]) + "/healthz"),
		}
		w.nats = append(w.nats, p)
	}
	w.natsPorts, w.natsURL = client, strings.Join(urls, ",")
	// A node is healthy only once the cluster has a JetStream leader: start all three
	// before waiting for any.
	w.launch(w.nats...)
}

func (w *world) startPortal() {
	port := freePort(w.t)
	w.portalURL = "http://" + addr(port)
	w.portal = &proc{
		name: "portal", path: bins.portal, args: []string{"-addr", addr(port)},
		env: []string{"PATH=" + os.Getenv("PATH")}, logPath: filepath.Join(w.dir, "portal.log"),
		healthy: httpOK(w.portalURL + "/__admin/counters"),
	}
	w.launch(w.portal)
}

// service declares `latchkey serve <kind>` (the kind is name up to a dash), on ports
// of its own, with every peer's address; launch starts it.
func (w *world) service(name string, extra map[string]string) *proc {
	kind, _, _ := strings.Cut(name, "-")
	grpcPort, httpPort := freePort(w.t), freePort(w.t)
	home := filepath.Join(w.dir, name)
	if err := os.MkdirAll(home, 0o755); err != nil {
		w.t.Fatal(err)
	}
	env := map[string]string{
		"PATH": os.Getenv("PATH"), "HOME": home,
		"LATCHKEY_NATS_URL": w.natsURL,
		// Every stream and bucket on all three nodes. Until libs/config reads it
		// (issue 13, another branch) the services ignore it and declare one replica.
		"LATCHKEY_NATS_REPLICAS":  "3",
		"LATCHKEY_REDIS_URL":      w.redis.URL(),
		"LATCHKEY_INTERNAL_TOKEN": w.internalToken,
		"LATCHKEY_ADMIN_KEY":      w.adminKey,
		"LATCHKEY_DATA_DIR":       filepath.Join(home, "data"),
		"LATCHKEY_GRPC_ADDR":      addr(grpcPort),
		"LATCHKEY_HTTP_ADDR":      addr(httpPort),
		"LATCHKEY_LOG_LEVEL":      "info",
		"LATCHKEY_LOG_FORMAT":     "text",
		// A kill is the test's business; a clean stop at the end need not linger.
		"LATCHKEY_SHUTDOWN_TIMEOUT": "5s",
	}
	if kind == "vault" {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		env["LATCHKEY_VAULT_KEYS"] = "v1:" + base64.StdEncoding.EncodeToString(key)
	}
	for k, v := range extra {
		env[k] = v
	}
	p := &proc{
		name: name, path: bins.latchkey, args: []string{"serve", kind},
		logPath: filepath.Join(w.dir, name+".log"),
		healthy: httpOK("http://" + addr(httpPort) + "/healthz"),
	}
	for k, v := range env {
		p.env = append(p.env, k+"="+v)
	}
	w.grpcAddr[p] = addr(grpcPort)
	return p
}

// launch starts ps and waits until each is healthy.
func (w *world) launch(ps ...*proc) {
	w.t.Helper()
	for _, p := range ps {
		if err := p.start(); err != nil {
			w.t.Fatal(err)
		}
		w.all = append(w.all, p)
		w.t.Cleanup(func() { p.stop(10 * time.Second) })
	}
	for _, p := range ps {
		if err := p.waitHealthy(w.t.Context(), startTimeout); err != nil {
			w.t.Fatal(err)
		}
	}
}

// connect opens the clients a user has: gRPC to the registry and to both schedulers
// (round robin, as behind a load balancer), and NATS to the cluster.
func (w *world) connect() {
	t := w.t
	var err error
	w.nc, err = nats.Connect(w.natsURL, nats.Name("chaos-client"), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		t.Fatalf("connecting to nats: %v", err)
	}
	t.Cleanup(w.nc.Close)
	if w.js, err = jetstream.New(w.nc); err != nil {
		t.Fatal(err)
	}
	admin := w.dial(t, w.adminKey, w.grpcAddr[w.registry])
	created, err := latchkeyv1.NewProjectServiceClient(admin).CreateProject(t.Context(), &latchkeyv1.CreateProjectRequest{ProjectId: project, DisplayName: "Chaos"})
	if err != nil {
		t.Fatalf("CreateProject: %v", err)
	}
	w.apiKey = created.GetApiKeySecret()
	w.sessions = latchkeyv1.NewAuthSessionServiceClient(w.dial(t, w.apiKey, w.grpcAddr[w.registry]))
	var scheds []string
	for _, s := range w.scheds {
		scheds = append(scheds, w.grpcAddr[s])
	}
	w.runs = latchkeyv1.NewRunServiceClient(w.dial(t, w.apiKey, scheds...))
}

// dial connects to addrs, round robin, sending key as the bearer token.
func (w *world) dial(t *testing.T, key string, addrs ...string) *grpc.ClientConn {
	r := manual.NewBuilderWithScheme("chaos")
	var state resolver.State
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(state)
	cc, err := grpc.NewClient(r.Scheme()+":///latchkey",
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer(key)),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

// chaosBundle is the API the suite runs: the portal's invoices page with the Run's
// tag in its URL, so the portal counts each Run's visits (requests_by_tag).
const chaosBundle = `apis:
  tagged-invoices:
    description: The invoices page, tagged with the Run's tag so the portal counts each Run's visits.
    steps:
      - goto: "{{ .Vars.baseURL }}/invoices?tag={{ .Params.tag }}"
      - waitVisible: "#invoices"
      - extract: { as: account, selector: "#account-name" }
`

// setUp deploys the portal's login recipes with chaosBundle and creates alice's
// CREDENTIALS session, waiting until its create Run has logged in.
func (w *world) setUp() {
	t := w.t
	ctx := t.Context()
	files := []*latchkeyv1.BundleFile{{Path: "chaos.yaml", Content: []byte(chaosBundle)}}
	b, err := os.ReadFile(filepath.Join("..", "examples", "portal", "automations", "auth-sessions.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, &latchkeyv1.BundleFile{Path: "auth-sessions.yaml", Content: b})
	cc := w.dial(t, w.apiKey, w.grpcAddr[w.registry])
	if _, err := latchkeyv1.NewAutomationServiceClient(cc).DeployBundle(ctx, &latchkeyv1.DeployBundleRequest{Files: files}); err != nil {
		t.Fatalf("DeployBundle: %v", err)
	}
	resp, err := w.sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{
		AuthSessionId: "alice", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS,
		Credentials: map[string]string{"username": portal.AliceUsername, "password": portal.AlicePassword},
		Vars:        map[string]string{"baseURL": w.portalURL},
	})
	if err != nil {
		t.Fatalf("CreateAuthSession: %v", err)
	}
	w.session = resp.GetAuthSession().GetId()
	var run *latchkeyv1.Run
	testkit.Eventually(t, startTimeout, func() (bool, string) {
		r, err := w.runs.GetRun(ctx, &latchkeyv1.GetRunRequest{RunId: resp.GetCreateRunId()})
		if err != nil {
			return false, err.Error()
		}
		run = r.GetRun()
		return run.GetState() >= latchkeyv1.RunState_RUN_STATE_SUCCEEDED, "the session's create Run is " + run.GetState().String()
	})
	if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("the session's create Run ended %s %s: %s", run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
	}
}

// counters reads the portal's counters.
func (w *world) counters(ctx context.Context) (portal.Counters, error) {
	var c portal.Counters
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.portalURL+"/__admin/counters", nil)
	if err != nil {
		return c, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return c, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("GET /__admin/counters: %s", resp.Status)
	}
	return c, json.NewDecoder(resp.Body).Decode(&c)
}

// expireSessions logs every browser out at the portal, as a site's timeout does.
func (w *world) expireSessions(ctx context.Context) error {
	return w.post(ctx, "/__admin/expire-sessions", "")
}

// post sends body to one of the portal's admin endpoints.
func (w *world) post(ctx context.Context, path, body string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.portalURL+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s", path, resp.Status)
	}
	return nil
}

// restart kills p with SIGKILL, keeps it down for restartDelay, starts it again with
// the same ports and data, and waits until it is healthy. It runs beside the load, so
// it returns its error instead of failing the test.
func (w *world) restart(ctx context.Context, p *proc) error {
	pid := p.pid()
	if err := p.kill(); err != nil {
		return err
	}
	w.note("SIGKILL %s (pid %d)", p.name, pid)
	select {
	case <-time.After(restartDelay):
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := p.start(); err != nil {
		return err
	}
	began := time.Now()
	if err := p.waitHealthy(ctx, startTimeout); err != nil {
		return err
	}
	w.note("%s restarted (pid %d), healthy after %s", p.name, p.pid(), time.Since(began).Round(time.Millisecond))
	return nil
}

// streamNode returns the NATS node that holds stream (its leader).
func (w *world) streamNode(ctx context.Context, stream string) (*proc, error) {
	s, err := w.js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	if info.Cluster == nil {
		return nil, fmt.Errorf("stream %s has no cluster info", stream)
	}
	for _, n := range w.nats {
		if n.name == info.Cluster.Leader {
			return n, nil
		}
	}
	return nil, fmt.Errorf("stream %s is led by %q, not one of ours", stream, info.Cluster.Leader)
}

// replicas reports how many replicas each of Latchkey's streams has, for the report.
func (w *world) replicas(ctx context.Context) string {
	var parts []string
	for name := range w.js.StreamNames(ctx).Name() {
		s, err := w.js.Stream(ctx, name)
		if err != nil {
			parts = append(parts, name+"=?")
			continue
		}
		info := s.CachedInfo()
		leader := ""
		if info.Cluster != nil {
			leader = "@" + info.Cluster.Leader
		}
		parts = append(parts, fmt.Sprintf("%s=R%d%s", name, info.Config.Replicas, leader))
	}
	return strings.Join(parts, " ")
}

// report runs at cleanup: processes that died on their own fail the test, and a
// failed test prints the timeline and the end of every process's log.
func (w *world) report() {
	t := w.t
	for _, p := range w.all {
		for _, d := range p.unexpectedExits() {
			t.Errorf("%s; its log ends:\n%s", d, tailFile(p.logPath, 40))
		}
	}
	if !t.Failed() {
		return
	}
	w.mu.Lock()
	t.Logf("timeline:\n%s", strings.Join(w.timeline, "\n"))
	w.mu.Unlock()
	for _, p := range w.all {
		t.Logf("---- %s (%s): its last warnings and errors, then its last lines:\n%s\n  ...\n%s",
			p.name, p.logPath, grepTail(p.logPath, 40, "level=WARN", "level=ERROR", "[WRN]", "[ERR]", "panic"), tailFile(p.logPath, 8))
	}
	t.Logf("full logs are in %s while the test runs; `go test -artifacts` keeps them", w.dir)
}

func randomText() string { return strings.ToLower(rand.Text()[:16]) }
