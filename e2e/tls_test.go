package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/client"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/libs/testkit"
)

// TestTLSEverywhere runs the four services apart, each with its own certificate:
// TLS on every gRPC and HTTP listener, services dialling each other with TLS and
// presenting their certificates, TLS (and a password) to Redis and TLS to NATS. Every
// byte between the services, NATS, Redis and the client passes a relay that records
// it. A Run that needs a login, and one after the site expired the session, succeed;
// the recording holds neither the password nor the session cookie; a client without
// the CA and a plaintext client are refused with errors that say so.
func TestTLSEverywhere(t *testing.T) {
	t.Parallel()
	pki, err := server.GenerateDevPKI(t.TempDir(), "vault", "registry", "scheduler", "runner", "nats", "redis")
	if err != nil {
		t.Fatal(err)
	}
	wire := &recording{}

	natsCert, err := tls.LoadX509KeyPair(pki.Cert("nats"), pki.Key("nats"))
	if err != nil {
		t.Fatal(err)
	}
	natsTLS := &tls.Config{Certificates: []tls.Certificate{natsCert}, MinVersion: tls.VersionTLS12}
	nats, err := bus.StartEmbedded(t.Context(), bus.EmbeddedConfig{Port: bus.RandomPort, StoreDir: t.TempDir(), TLS: natsTLS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Shutdown)
	redis := testkit.RedisTLS(t, testkit.RedisTLSOptions{Cert: pki.Cert("redis"), Key: pki.Key("redis"), CA: pki.CA(), Password: "redis-password-for-tls-test"})

	p, portalURL := portaltest.Start(t, portal.Config{})
	services := []string{"vault", "registry", "scheduler", "runner"}
	// Each service listens on a port of its own choosing (a port picked in advance can
	// be taken by another listener meanwhile); its relay passes connections on once it
	// is known.
	addr, relayed, listening := map[string]string{}, map[string]string{}, map[string]*atomic.Pointer[string]{}
	for _, s := range services {
		listening[s] = &atomic.Pointer[string]{}
		relayed[s] = wire.relayTo(t, listening[s].Load)
	}
	env := map[string]string{
		"LATCHKEY_NATS_URL":       "tls://" + wire.relay(t, nats.ClientURL()[strings.Index(nats.ClientURL(), "://")+3:]),
		"LATCHKEY_NATS_TLS_CA":    pki.CA(),
		"LATCHKEY_REDIS_URL":      "rediss://:redis-password-for-tls-test@" + wire.relay(t, redis.Addr),
		"LATCHKEY_REDIS_TLS_CA":   pki.CA(),
		"LATCHKEY_TLS_CA":         pki.CA(),
		"LATCHKEY_VAULT_ADDR":     relayed["vault"],
		"LATCHKEY_REGISTRY_ADDR":  relayed["registry"],
		"LATCHKEY_SCHEDULER_ADDR": relayed["scheduler"],
		"LATCHKEY_CHROMIUM_PATH":  testkit.ChromiumPath(t),
		"LATCHKEY_VAULT_KEYS":     "v1:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU=",
	}
	stacks := map[string]*stacktest.Stack{}
	for _, s := range services {
		e := map[string]string{"LATCHKEY_TLS_CERT": pki.Cert(s), "LATCHKEY_TLS_KEY": pki.Key(s)}
		for k, v := range env {
			e[k] = v
		}
		stacks[s] = stacktest.Start(t, stacktest.Options{Services: []string{s}, Env: e, Args: []string{"-grpc-addr", "127.0.0.1:0"}})
		a := stacks[s].GRPCAddr()
		addr[s] = a
		listening[s].Store(&a)
	}

	withCA, err := server.ClientTLSConfig(pki.CA(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	dial := func(service, key string) *client.Client {
		c, err := client.Dial(relayed[service], client.Options{APIKey: key, TLS: withCA.Clone()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	admin := dial("registry", stacks["registry"].AdminKey)
	project, err := admin.Projects.CreateProject(t.Context(), &latchkeyv1.CreateProjectRequest{ProjectId: "acme"})
	if err != nil {
		t.Fatalf("CreateProject over TLS: %v", err)
	}
	registry, scheduler := dial("registry", project.GetApiKeySecret()), dial("scheduler", project.GetApiKeySecret())
	deployPortalBundle(t, registry)
	created, err := registry.Sessions.CreateAuthSession(t.Context(), &latchkeyv1.CreateAuthSessionRequest{
		Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Credentials: alice(), Vars: map[string]string{"baseURL": portalURL},
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := func() string {
		var b strings.Builder
		for _, s := range services {
			b.WriteString("--- " + s + ":\n" + tail(stacks[s].Logs.String()) + "\n")
		}
		return b.String()
	}
	wctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if login, err := scheduler.Wait(wctx, created.GetCreateRunId(), nil); err != nil || login.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("login Run over TLS: %v %s %s\n%s", err, login.GetState(), login.GetFailureMessage(), logs())
	}
	session := created.GetAuthSession().GetId()
	runInvoices := func() {
		t.Helper()
		run, err := scheduler.Run(t.Context(), &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: session})
		if err != nil || run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			t.Fatalf("Run over TLS: %v %s %s", err, run.GetState(), run.GetFailureMessage())
		}
	}
	runInvoices()
	p.ExpireSessions()
	runInvoices() // the check fails, one login, the Run goes on
	if n := p.Counters().Logins; n != 2 {
		t.Errorf("the portal saw %d logins, want 2 (the first and one recreate)", n)
	}

	state, _, err := registry.ExportStorageState(t.Context(), session, 0)
	if err != nil {
		t.Fatal(err)
	}
	cookie := cookieIn(t, state, portal.SessionCookie)
	for name, secret := range map[string]string{"the password": portal.AlicePassword, "the session cookie": cookie, "the API key": project.GetApiKeySecret()} {
		if wire.contains(secret) {
			t.Errorf("%s crossed the network in clear", name)
		}
	}
	if wire.len() < 10_000 {
		t.Fatalf("the relays recorded only %d bytes: the traffic did not pass them", wire.len())
	}

	t.Run("a service's certificate calls only what that service needs", func(t *testing.T) {
		asRunner, err := server.ClientTLSConfig(pki.CA(), pki.Cert("runner"), pki.Key("runner"))
		if err != nil {
			t.Fatal(err)
		}
		cc, err := server.Dial(relayed["vault"], server.DialOptions{Token: stacks["vault"].InternalToken, Service: "runner", TLS: asRunner})
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		vc := vaultv1.NewVaultServiceClient(cc)
		// The runner seals states: allowed.
		if _, err := vc.Encrypt(t.Context(), &vaultv1.EncryptRequest{Context: &vaultv1.CryptoContext{ProjectId: "acme", Kind: "storage_state", Id: session}, Plaintext: []byte("{}")}); err != nil {
			t.Fatalf("Encrypt with the runner's certificate: %v", err)
		}
		// It never stores secrets, even holding the internal token.
		_, err = vc.PutSecret(t.Context(), &vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: "planted", Fields: map[string]string{"password": "x"}})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "runner") || !strings.Contains(err.Error(), "PutSecret") {
			t.Fatalf("PutSecret with the runner's certificate: %v, want PermissionDenied naming the runner and the RPC", err)
		}
	})
	t.Run("a client without the CA is refused, naming the certificate", func(t *testing.T) {
		c, err := client.Dial(relayed["scheduler"], client.Options{APIKey: project.GetApiKeySecret(), TLS: &tlsConfigNoCA, MaxAttempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.Runs.GetRun(t.Context(), &latchkeyv1.GetRunRequest{RunId: "x"})
		if !errors.Is(err, client.ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("GetRun without the CA: %v, want Unavailable naming the certificate", err)
		}
	})
	t.Run("a plaintext client is refused", func(t *testing.T) {
		c, err := client.Dial(addr["scheduler"], client.Options{APIKey: project.GetApiKeySecret(), MaxAttempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Runs.GetRun(t.Context(), &latchkeyv1.GetRunRequest{RunId: "x"}); !errors.Is(err, client.ErrUnavailable) {
			t.Fatalf("GetRun in plaintext: %v, want Unavailable", err)
		}
		resp, err := http.Get("http://" + stacks["scheduler"].HTTPAddr() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("plaintext /healthz answered %s, want a refusal", resp.Status)
			}
		}
		https := &http.Client{Transport: &http.Transport{TLSClientConfig: withCA.Clone()}}
		resp, err = https.Get("https://" + stacks["scheduler"].HTTPAddr() + "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("/healthz over TLS: %v %v", err, resp)
		}
		resp.Body.Close()
	})
}

// tlsConfigNoCA trusts only the system's roots, which never signed the test's CA.
var tlsConfigNoCA = tls.Config{MinVersion: tls.VersionTLS12}

// cookieIn is the value of the named cookie in a Playwright storageState.
func cookieIn(t *testing.T, state []byte, name string) string {
	t.Helper()
	var st struct {
		Cookies []struct{ Name, Value string } `json:"cookies"`
	}
	if err := json.Unmarshal(state, &st); err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Cookies {
		if c.Name == name && c.Value != "" {
			return c.Value
		}
	}
	t.Fatalf("no %s cookie in the exported state", name)
	return ""
}

// deployPortalBundle deploys the demo portal's recipes through c.
func deployPortalBundle(t *testing.T, c *client.Client) {
	t.Helper()
	dir := filepath.Join("..", "examples", "portal", "automations")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []*latchkeyv1.BundleFile
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, &latchkeyv1.BundleFile{Path: e.Name(), Content: b})
	}
	if _, err := c.Automations.DeployBundle(t.Context(), &latchkeyv1.DeployBundleRequest{Files: files}); err != nil {
		t.Fatalf("DeployBundle: %v", err)
	}
}

// freeAddr is a free 127.0.0.1 address for a listener started next.
// recording is every byte its relays passed, both ways.
type recording struct{ testkit.SyncBuffer }

func (r *recording) contains(s string) bool { return s != "" && strings.Contains(r.String(), s) }

func (r *recording) len() int { return len(r.String()) }

// relay listens on a new 127.0.0.1 port and passes every connection to target,
// recording what crosses it; it stops when the test ends.
func (r *recording) relay(t *testing.T, target string) string {
	t.Helper()
	return r.relayTo(t, func() *string { return &target })
}

// relayTo is relay to the address target returns when a connection comes; while it
// returns nil the connection is closed, as a port nobody listens on would refuse it.
func (r *recording) relayTo(t *testing.T, target func() *string) string {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			to := target()
			if to == nil {
				in.Close()
				continue
			}
			out, err := (&net.Dialer{}).DialContext(ctx, "tcp", *to)
			if err != nil {
				in.Close()
				continue
			}
			stop := context.AfterFunc(ctx, func() { in.Close(); out.Close() })
			wg.Go(func() {
				defer stop()
				pipe := func(dst, src net.Conn) {
					_, _ = io.Copy(dst, io.TeeReader(src, r))
					dst.Close()
					src.Close()
				}
				var both sync.WaitGroup
				both.Go(func() { pipe(out, in) })
				pipe(in, out)
				both.Wait()
			})
		}
	})
	return l.Addr().String()
}
