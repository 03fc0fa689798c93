package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/config"
	"github.com/latchkey/latchkey/libs/testkit"
)

const testVaultKeys = "v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

// natsWithPassword runs an embedded nats-server with JetStream that admits user
// "latchkey" with password, until the test ends.
func natsWithPassword(t *testing.T, password string) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true, Username: "latchkey", Password: password,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10e9) {
		t.Fatal("nats-server not ready in 10s")
	}
	return srv.ClientURL()
}

// TestServeRefusesNATSItCannotUse: `latchkey serve` stops at start-up with a message
// that names what to fix when NATS is too old (Debian 12's nats-server 2.9, run as
// a process), refuses the credentials, or cannot hold the replicas asked for.
func TestServeRefusesNATSItCannotUse(t *testing.T) {
	embedded, err := bus.StartEmbedded(t.Context(), bus.EmbeddedConfig{Port: bus.RandomPort, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(embedded.Shutdown)
	withPassword := natsWithPassword(t, "right-pw")

	tests := []struct {
		name string
		nats func(t *testing.T) string
		env  map[string]string
		want []string
	}{
		{"too old", func(t *testing.T) string { return testkit.StartNATSProcess(t, testkit.SystemNATSServer(t)).URL }, nil,
			[]string{"is too old: Latchkey needs " + bus.MinServerVersion + " or newer"}},
		{"wrong password", func(*testing.T) string { return withPassword },
			map[string]string{"LATCHKEY_NATS_USER": "latchkey", "LATCHKEY_NATS_PASSWORD": "wrong-pw"},
			[]string{`the server refused the password of user "latchkey"`, "LATCHKEY_NATS_USER, LATCHKEY_NATS_PASSWORD"}},
		{"three replicas on one server", func(*testing.T) string { return embedded.ClientURL() },
			map[string]string{"LATCHKEY_NATS_REPLICAS": "3"},
			[]string{"LATCHKEY_NATS_REPLICAS) is 3", "runs alone"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{
				"LATCHKEY_NATS_URL": tt.nats(t), "LATCHKEY_INTERNAL_TOKEN": "tok", "LATCHKEY_VAULT_KEYS": testVaultKeys,
			}
			for k, v := range tt.env {
				env[k] = v
			}
			var stderr testkit.SyncBuffer
			// Bounded: a serve that starts after all runs until its context ends.
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			err := run(ctx, []string{"serve", "vault", "-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-data-dir", t.TempDir()},
				config.MapEnv(env), &testkit.SyncBuffer{}, &stderr)
			if err == nil {
				t.Fatal("serve started")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if strings.Contains(err.Error()+stderr.String(), "wrong-pw") {
				t.Errorf("the NATS password was printed:\n%v\n%s", err, stderr.String())
			}
		})
	}
}

func TestServeWithNATSPassword(t *testing.T) {
	env := map[string]string{
		"LATCHKEY_NATS_URL": natsWithPassword(t, "right-pw"), "LATCHKEY_NATS_USER": "latchkey", "LATCHKEY_NATS_PASSWORD": "right-pw",
		"LATCHKEY_INTERNAL_TOKEN": "tok", "LATCHKEY_VAULT_KEYS": testVaultKeys,
	}
	p := start(t, env, "serve", "vault", "-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-data-dir", t.TempDir())
	p.waitFor(t, regexp.MustCompile(`serving gRPC on (\S+),`))
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.stderr.String(), "nats_password=[REDACTED]") || strings.Contains(p.stderr.String(), "right-pw") {
		t.Errorf("the logged config does not hide the NATS password:\n%s", p.stderr)
	}
}
