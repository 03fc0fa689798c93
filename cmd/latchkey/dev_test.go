package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/config"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/libs/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testkit.LibraryGoroutines()...) }

// proc is a `latchkey` command running in-process.
type proc struct {
	stdout, stderr *testkit.SyncBuffer
	cancel         context.CancelFunc
	done           chan error
}

func start(t *testing.T, env map[string]string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{stdout: &testkit.SyncBuffer{}, stderr: &testkit.SyncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- run(ctx, args, config.MapEnv(env), p.stdout, p.stderr) }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// waitFor waits until stdout matches re and returns the submatches.
func (p *proc) waitFor(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(p.stdout.String()); m != nil {
			return m
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("exited early: %v\nstdout:\n%s\nstderr:\n%s", err, p.stdout, p.stderr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no %q in time\nstdout:\n%s\nstderr:\n%s", re, p.stdout, p.stderr)
	return nil
}

// stop sends the equivalent of Ctrl-C and returns what run returned.
func (p *proc) stop(t *testing.T) error {
	t.Helper()
	p.cancel()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("did not stop within 20s\nstderr:\n%s", p.stderr)
		return nil
	}
}

var upRE = regexp.MustCompile(`gRPC\s+(\S+).*\n\s+HTTP\s+https?://(\S+)`)

func devArgs(dataDir string) []string {
	return []string{"dev", "-data-dir", dataDir, "-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-embedded-nats-addr", "127.0.0.1:-1"}
}

func dialT(t *testing.T, addr, token string) *grpc.ClientConn {
	t.Helper()
	cc, err := server.Dial(addr, server.DialOptions{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func listServices(t *testing.T, cc *grpc.ClientConn) []string {
	t.Helper()
	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	_ = stream.CloseSend()
	return names
}

var allServices = []string{
	"latchkey.v1.ProjectService", "latchkey.v1.AutomationService", "latchkey.v1.AuthSessionService",
	"latchkey.registry.v1.SessionStateService", "latchkey.vault.v1.VaultService",
	"latchkey.v1.RunService", "latchkey.v1.JobService",
}

func TestDevServesEveryServiceHealthy(t *testing.T) {
	dataDir := t.TempDir()
	p := start(t, nil, devArgs(dataDir)...)
	m := p.waitFor(t, upRE)
	grpcAddr, httpAddr := m[1], m[2]
	cc := dialT(t, grpcAddr, "")

	hc := healthpb.NewHealthClient(cc)
	for _, svc := range append([]string{"", "latchkey.browser-runner"}, allServices...) {
		r, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q = %v, %v", svc, r.GetStatus(), err)
		}
	}

	res, err := http.Get("http://" + httpAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Status   string
		Services map[string]string
	}
	err = json.NewDecoder(res.Body).Decode(&rep)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK || rep.Status != "ok" || len(rep.Services) != len(allServices)+1 {
		t.Fatalf("/healthz = %d %+v (%v)", res.StatusCode, rep, err)
	}

	listed := listServices(t, cc)
	for _, svc := range allServices {
		if !slices.Contains(listed, svc) {
			t.Errorf("reflection does not list %s: %v", svc, listed)
		}
	}

	// The public API needs a key; the admin key from the data dir is accepted.
	_, err = latchkeyv1.NewProjectServiceClient(cc).ListProjects(t.Context(), &latchkeyv1.ListProjectsRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListProjects without a key: %v", err)
	}
	admin, err := os.ReadFile(filepath.Join(dataDir, adminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	adminCC := dialT(t, grpcAddr, strings.TrimSpace(string(admin)))
	_, err = latchkeyv1.NewProjectServiceClient(adminCC).ListProjects(t.Context(), &latchkeyv1.ListProjectsRequest{})
	if code := status.Code(err); code == codes.Unauthenticated || code == codes.PermissionDenied {
		t.Errorf("admin key refused: %v", err)
	}
	// The vault is internal: even the admin key is refused.
	_, err = vaultv1.NewVaultServiceClient(adminCC).KeyStatus(t.Context(), &vaultv1.KeyStatusRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("vault with admin key: %v", err)
	}

	if err := p.stop(t); err != nil {
		t.Fatalf("dev returned %v on Ctrl-C", err)
	}
	if !strings.Contains(p.stdout.String(), "stopped") {
		t.Errorf("no clean stop reported:\n%s", p.stdout)
	}
}

func TestDevKeepsSecretsAcrossRestarts(t *testing.T) {
	dataDir := t.TempDir()
	p := start(t, nil, devArgs(dataDir)...)
	p.waitFor(t, upRE)
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(filepath.Join(dataDir, adminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{adminKeyFile, internalTokenFile} {
		fi, err := os.Stat(filepath.Join(dataDir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, err %v; want 0600", f, fi.Mode().Perm(), err)
		}
	}

	p = start(t, nil, devArgs(dataDir)...)
	p.waitFor(t, upRE)
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(filepath.Join(dataDir, adminKeyFile))
	if !bytes.Equal(first, second) {
		t.Error("admin key changed across restarts")
	}
	if strings.Contains(p.stderr.String(), "generated the admin key") {
		t.Error("second start claims to have generated the admin key")
	}
	if strings.Contains(p.stderr.String(), strings.TrimSpace(string(first))) {
		t.Error("the admin key was logged")
	}
}

func TestServeOneServiceAgainstExternalNATS(t *testing.T) {
	nsrv, err := bus.StartEmbedded(t.Context(), bus.EmbeddedConfig{Port: bus.RandomPort, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nsrv.Shutdown)
	env := map[string]string{
		"LATCHKEY_NATS_URL": nsrv.ClientURL(), "LATCHKEY_INTERNAL_TOKEN": "tok",
		"LATCHKEY_VAULT_KEYS": "v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	}
	p := start(t, env, "serve", "vault", "-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-data-dir", t.TempDir())
	m := p.waitFor(t, regexp.MustCompile(`serving gRPC on (\S+),`))
	hc := healthpb.NewHealthClient(dialT(t, m[1], ""))
	r, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "latchkey.vault.v1.VaultService"})
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("vault health = %v, %v", r.GetStatus(), err)
	}
	if _, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "latchkey.v1.RunService"}); status.Code(err) != codes.NotFound {
		t.Errorf("serve vault also serves the scheduler: %v", err)
	}
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestHelpAndExitCodes: `latchkey GROUP -h` lists the group's commands, and the exit
// code tells a mistake on the command line (2) from other errors (1).
func TestHelpAndExitCodes(t *testing.T) {
	out := &testkit.SyncBuffer{}
	if err := run(t.Context(), []string{"runs", "-h"}, config.MapEnv(nil), out, out); err != nil {
		t.Fatalf("runs -h: %v", err)
	}
	for _, sub := range []string{"start API", "watch ID", "cancel ID"} {
		if !strings.Contains(out.String(), sub) {
			t.Errorf("runs -h does not list %q:\n%s", sub, out)
		}
	}
	for _, args := range [][]string{{"frobnicate"}, {"runs", "frobnicate"}, {"runs", "list", "-no-such-flag"}, {"runs", "-o", "yaml", "list"}} {
		err := run(t.Context(), args, config.MapEnv(map[string]string{"LATCHKEY_API_KEY": "lk_x", "LATCHKEY_ADDR": "127.0.0.1:1"}), &testkit.SyncBuffer{}, &testkit.SyncBuffer{})
		if err == nil || exitCode(err) != exitUsage {
			t.Errorf("latchkey %s: %v (exit %d), want a usage error (exit %d)", strings.Join(args, " "), err, exitCode(err), exitUsage)
		}
	}
	if got := describe(errors.New("listing: rpc error: code = PermissionDenied desc = not yours")); got != "listing: PermissionDenied: not yours" {
		t.Errorf("describe = %q", got)
	}
}

func TestCommandErrorsAreActionable(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no command", nil, nil, "no command"},
		{"unknown command", nil, []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"serve without service", nil, []string{"serve"}, "serve needs a service"},
		{"unknown service", map[string]string{"LATCHKEY_NATS_URL": "nats://127.0.0.1:1", "LATCHKEY_INTERNAL_TOKEN": "x"}, []string{"serve", "gateway"}, `unknown service "gateway"`},
		{"serve without nats", nil, []string{"serve", "vault"}, "LATCHKEY_NATS_URL"},
		{"serve without token", map[string]string{"LATCHKEY_NATS_URL": "nats://127.0.0.1:1"}, []string{"serve", "vault"}, "LATCHKEY_INTERNAL_TOKEN"},
		{"bad flag value", nil, []string{"dev", "-runner-contexts", "0"}, "-runner-contexts"},
		{"port taken", nil, []string{"dev", "-data-dir", "DATADIR", "-grpc-addr", "TAKEN", "-http-addr", "127.0.0.1:0", "-embedded-nats-addr", "127.0.0.1:-1"}, "listening for gRPC"},
	}
	taken, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := slices.Clone(tc.args)
			for i, a := range args {
				args[i] = strings.NewReplacer("DATADIR", t.TempDir(), "TAKEN", taken.Addr().String()).Replace(a)
			}
			err := run(t.Context(), args, config.MapEnv(tc.env), &testkit.SyncBuffer{}, &testkit.SyncBuffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
