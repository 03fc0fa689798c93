package runner

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/libs/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testkit.LibraryGoroutines()...) }

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	_, _, js := testkit.NATS(t)
	cc, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	deps := Deps{Logger: slog.New(slog.DiscardHandler), Tracer: noop.NewTracerProvider(), JS: js,
		Registry: registryv1.NewSessionStateServiceClient(cc), Vault: vaultv1.NewVaultServiceClient(cc)}
	tests := []struct {
		name string
		cfg  Config
		deps Deps
	}{
		{"no pool", Config{Contexts: 1}, deps},
		{"no contexts", Config{Pool: "p"}, deps},
		{"pool with a dot", Config{Pool: "a.b", Contexts: 1}, deps},
		{"no jetstream", Config{Pool: "p", Contexts: 1}, Deps{Logger: deps.Logger, Tracer: deps.Tracer}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg, tt.deps); err == nil {
				t.Error("New accepted it")
			}
		})
	}
}

// TestStartStopHealth starts the runner (Chromium and its task loop) and sees it
// healthy, then unhealthy after Stop.
func TestStartStopHealth(t *testing.T) {
	t.Parallel()
	_, _, js := testkit.NATS(t)
	cc, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	srv, err := server.New(server.Options{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{Pool: "p", Contexts: 1, ChromiumPath: testkit.ChromiumPath(t)}, Deps{
		Logger: slog.New(slog.DiscardHandler), Tracer: noop.NewTracerProvider(), JS: js,
		Registry: registryv1.NewSessionStateServiceClient(cc), Vault: vaultv1.NewVaultServiceClient(cc),
	})
	if err != nil {
		t.Fatal(err)
	}
	svc.Register(srv)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	healthz := func() int {
		resp, err := http.Get("http://" + srv.HTTPAddr() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if err := svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := healthz(); got != http.StatusOK {
		t.Errorf("healthz %d after Start", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := svc.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if got := healthz(); got != http.StatusServiceUnavailable {
		t.Errorf("healthz %d after Stop", got)
	}
}
