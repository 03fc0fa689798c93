package config

import (
	"bytes"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func parse(t *testing.T, env map[string]string, args ...string) *Config {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c := Register(fs, MapEnv(env))
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse: %v", err)
	}
	return c
}

func TestDefaultsBindLoopback(t *testing.T) {
	t.Parallel()
	c := parse(t, map[string]string{"HOME": "/home/u"})
	if c.GRPCAddr != "127.0.0.1:7400" || c.HTTPAddr != "127.0.0.1:7480" || c.EmbeddedNATSAddr != "127.0.0.1:4223" {
		t.Fatalf("defaults = %s %s %s", c.GRPCAddr, c.HTTPAddr, c.EmbeddedNATSAddr)
	}
	if c.DataDir != "/home/u/.latchkey" {
		t.Fatalf("data dir = %q", c.DataDir)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
}

func TestEnvThenFlagPrecedence(t *testing.T) {
	t.Parallel()
	env := map[string]string{"LATCHKEY_GRPC_ADDR": "127.0.0.1:9000", "LATCHKEY_RUNNER_CONTEXTS": "7", "LATCHKEY_RUNNER_LOGIN_CONTEXTS": "3", "LATCHKEY_NATS_URL": "nats://127.0.0.1:4222"}
	c := parse(t, env)
	if c.GRPCAddr != "127.0.0.1:9000" || c.RunnerContexts != 7 || c.RunnerLoginContexts != 3 || c.NATSURL != "nats://127.0.0.1:4222" {
		t.Fatalf("env not applied: %+v", c.LogValue())
	}
	c = parse(t, env, "-grpc-addr", "127.0.0.1:9100", "-runner-contexts", "2")
	if c.GRPCAddr != "127.0.0.1:9100" || c.RunnerContexts != 2 {
		t.Fatalf("flag did not win: %s %d", c.GRPCAddr, c.RunnerContexts)
	}
}

func TestValidateNamesEveryBadFlag(t *testing.T) {
	t.Parallel()
	c := parse(t, nil, "-runner-contexts", "0", "-runner-login-contexts", "0", "-log-level", "loud", "-log-format", "xml")
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted bad config")
	}
	for _, want := range []string{"-runner-contexts", "-runner-login-contexts", "-log-level", "-log-format"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	c := parse(t, map[string]string{
		"LATCHKEY_VAULT_KEYS":     "v1:c2VjcmV0LWtleS1jYW5hcnk=",
		"LATCHKEY_INTERNAL_TOKEN": "tok-canary",
		"LATCHKEY_ADMIN_KEY":      "lk_admin-canary",
		"LATCHKEY_REDIS_URL":      "redis://user:pw-canary@127.0.0.1:6379/0",
	})
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", *c)
	outputs := []string{buf.String(), c.String(), fmt.Sprintf("%v %+v %#v %s", *c, *c, *c, *c)}
	for _, out := range outputs {
		for _, secret := range []string{"c2VjcmV0LWtleS1jYW5hcnk=", "tok-canary", "lk_admin-canary", "pw-canary"} {
			if strings.Contains(out, secret) {
				t.Errorf("secret %q printed in %q", secret, out)
			}
		}
	}
	if !strings.Contains(buf.String(), "127.0.0.1:6379") {
		t.Errorf("redis host should stay visible: %s", buf.String())
	}
}
