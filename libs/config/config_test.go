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
		"LATCHKEY_NATS_URL":       "nats://natstok-canary@10.0.0.1:4222,nats://natstok-canary@10.0.0.2:4222",
		"LATCHKEY_NATS_PASSWORD":  "natspw-canary",
		"LATCHKEY_NATS_TOKEN":     "natstoken-canary",
	})
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", *c)
	outputs := []string{buf.String(), c.String(), fmt.Sprintf("%v %+v %#v %s", *c, *c, *c, *c)}
	for _, out := range outputs {
		for _, secret := range []string{"c2VjcmV0LWtleS1jYW5hcnk=", "tok-canary", "lk_admin-canary", "pw-canary", "natstok-canary", "natspw-canary", "natstoken-canary"} {
			if strings.Contains(out, secret) {
				t.Errorf("secret %q printed in %q", secret, out)
			}
		}
	}
	for _, visible := range []string{"127.0.0.1:6379", "10.0.0.1:4222", "10.0.0.2:4222"} {
		if !strings.Contains(buf.String(), visible) {
			t.Errorf("host %s should stay visible: %s", visible, buf.String())
		}
	}
}

func TestNATSSettings(t *testing.T) {
	t.Parallel()
	c := parse(t, nil)
	if c.NATSReplicas != 1 {
		t.Fatalf("default replicas = %d, want 1", c.NATSReplicas)
	}
	env := map[string]string{
		"LATCHKEY_NATS_REPLICAS": "3", "LATCHKEY_NATS_CREDS": "/etc/latchkey/nats.creds",
		"LATCHKEY_NATS_TLS_CA": "/ca.pem", "LATCHKEY_NATS_TLS_CERT": "/c.pem", "LATCHKEY_NATS_TLS_KEY": "/k.pem",
	}
	c = parse(t, env)
	if c.NATSReplicas != 3 || c.NATSCreds != "/etc/latchkey/nats.creds" || c.NATSTLSCA != "/ca.pem" || c.NATSTLSCert != "/c.pem" || c.NATSTLSKey != "/k.pem" {
		t.Fatalf("env not applied: %v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c = parse(t, env, "-nats-replicas", "5", "-nats-creds", "", "-nats-user", "lk", "-nats-password", "pw")
	if c.NATSReplicas != 5 || c.NATSCreds != "" || c.NATSUser != "lk" || c.NATSPassword != "pw" {
		t.Fatalf("flags did not win: %v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"-nats-token", "-nats-nkey"} {
		if c := parse(t, nil, tok, "x"); c.Validate() != nil {
			t.Errorf("%s alone: %v", tok, c.Validate())
		}
	}
}

func TestValidateNATSSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"two replicas", nil, []string{"-nats-replicas", "2"}, "LATCHKEY_NATS_REPLICAS) must be 1 (one server), 3 or 5"},
		{"too many replicas", map[string]string{"LATCHKEY_NATS_REPLICAS": "7"}, nil, "got 7"},
		{"replicas not a number", map[string]string{"LATCHKEY_NATS_REPLICAS": "three"}, nil, `LATCHKEY_NATS_REPLICAS="three" is not a number`},
		{"two ways to authenticate", map[string]string{"LATCHKEY_NATS_TOKEN": "t", "LATCHKEY_NATS_CREDS": "c"}, nil, "-nats-creds (LATCHKEY_NATS_CREDS), -nats-token (LATCHKEY_NATS_TOKEN); keep one"},
		{"user in URL and setting", map[string]string{"LATCHKEY_NATS_URL": "nats://a:b@h:4222", "LATCHKEY_NATS_USER": "u"}, nil, "credentials in -nats-url"},
		{"password without user", map[string]string{"LATCHKEY_NATS_PASSWORD": "p"}, nil, "needs -nats-user (LATCHKEY_NATS_USER)"},
		{"certificate without key", map[string]string{"LATCHKEY_NATS_TLS_CERT": "c.pem"}, nil, "set both or neither"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := parse(t, tt.env, tt.args...).Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate: got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// A flag that overrides an unreadable variable makes it harmless.
	if err := parse(t, map[string]string{"LATCHKEY_NATS_REPLICAS": "three"}, "-nats-replicas", "3").Validate(); err != nil {
		t.Errorf("-nats-replicas 3 over LATCHKEY_NATS_REPLICAS=three: %v", err)
	}
}

func TestNATSCredentialSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		env  map[string]string
		want string
	}{
		{nil, "none set"},
		{map[string]string{"LATCHKEY_NATS_USER": "u", "LATCHKEY_NATS_PASSWORD": "p"}, "LATCHKEY_NATS_USER, LATCHKEY_NATS_PASSWORD"},
		{map[string]string{"LATCHKEY_NATS_URL": "nats://u:p@h"}, "in -nats-url (LATCHKEY_NATS_URL)"},
		{map[string]string{"LATCHKEY_NATS_TOKEN": "t"}, "LATCHKEY_NATS_TOKEN"},
		{map[string]string{"LATCHKEY_NATS_CREDS": "c"}, "LATCHKEY_NATS_CREDS"},
		{map[string]string{"LATCHKEY_NATS_NKEY": "n"}, "LATCHKEY_NATS_NKEY"},
	}
	for _, tt := range tests {
		if got := parse(t, tt.env).NATSCredentialSettings(); !strings.Contains(got, tt.want) {
			t.Errorf("NATSCredentialSettings with %v = %q, want it to contain %q", tt.env, got, tt.want)
		}
	}
}
