// Package stacktest starts a whole Latchkey stack (or some of its services) inside a
// test, on random loopback ports with an embedded NATS JetStream server, so end-to-end
// tests talk to the services exactly as users do: over gRPC and NATS.
package stacktest

import (
	"context"
	"flag"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"

	"github.com/latchkey/latchkey/internal/stack"
	"github.com/latchkey/latchkey/libs/config"
	"github.com/latchkey/latchkey/libs/logging"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/libs/testkit"
)

// Options configure Start. The zero value runs every service with an in-process cache.
type Options struct {
	// Services to run; empty means all of stack.ServiceNames.
	Services []string
	// Env adds LATCHKEY_* and OTEL_* variables (LATCHKEY_REDIS_URL, for instance).
	Env map[string]string
	// Args adds command-line flags, as `latchkey dev` takes them.
	Args []string
	// SpanExporter receives every service's spans. An in-memory exporter forgets its
	// spans when the stack shuts down: read them before the test ends.
	SpanExporter sdktrace.SpanExporter
}

// Stack is a running stack with the secrets a test needs to call it.
type Stack struct {
	*stack.Stack
	Config        *config.Config
	AdminKey      string
	InternalToken string
	// Logs holds everything the services logged (JSON lines), for tests that assert
	// what is and is not logged.
	Logs *SyncBuffer
}

// Start starts the stack and registers its shutdown with tb.Cleanup.
func Start(tb testing.TB, opts Options) *Stack {
	tb.Helper()
	env := map[string]string{
		"LATCHKEY_INTERNAL_TOKEN": "test-internal-token-" + strings.ReplaceAll(tb.Name(), "/", "-"),
		"LATCHKEY_ADMIN_KEY":      "lk_admin_test",
	}
	for k, v := range opts.Env {
		env[k] = v
	}
	fs := flag.NewFlagSet("stacktest", flag.ContinueOnError)
	cfg := config.Register(fs, config.MapEnv(env))
	args := append([]string{
		"-data-dir", tb.TempDir(), "-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0",
		"-embedded-nats-addr", "127.0.0.1:-1", "-log-format", "json", "-log-level", "debug",
		"-shutdown-timeout", "10s",
	}, opts.Args...)
	if err := fs.Parse(args); err != nil {
		tb.Fatalf("stacktest: flags: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		tb.Fatalf("stacktest: config: %v", err)
	}
	logs := &SyncBuffer{}
	log, err := logging.New(logs, "json", "debug")
	if err != nil {
		tb.Fatal(err)
	}
	names := opts.Services
	if len(names) == 0 {
		names = stack.ServiceNames
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := stack.Start(ctx, cfg, names, stack.Options{Env: config.MapEnv(env), Logger: log, SpanExporter: opts.SpanExporter})
	if err != nil {
		tb.Fatalf("stacktest: starting %v: %v\nlogs:\n%s", names, err, logs)
	}
	tb.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		st.Shutdown(sctx)
	})
	return &Stack{Stack: st, Config: cfg, AdminKey: cfg.AdminKey, InternalToken: cfg.InternalToken, Logs: logs}
}

// Dial returns a client connection to the stack that sends token as its bearer
// credentials (an API key, the admin key, or the internal token), closed at cleanup.
func (s *Stack) Dial(tb testing.TB, token string) *grpc.ClientConn {
	tb.Helper()
	cc, err := server.Dial(s.GRPCAddr(), server.DialOptions{Token: token, Service: "stacktest"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return cc
}

// SyncBuffer holds a stack's logs (testkit.SyncBuffer).
type SyncBuffer = testkit.SyncBuffer
