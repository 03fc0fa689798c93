package vault

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/logging"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/libs/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testkit.LibraryGoroutines()...) }

func newKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func TestLoadKeys(t *testing.T) {
	t.Parallel()
	k1 := newKey()
	file := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(file, []byte("v1:"+k1+"\nv2:"+newKey()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		src     KeySource
		wantErr string
	}{
		{"inline", KeySource{Keys: "v1:" + k1}, ""},
		{"inline wins over file", KeySource{Keys: "v1:" + k1, File: "/nonexistent"}, ""},
		{"file", KeySource{File: file}, ""},
		{"missing file", KeySource{File: "/nonexistent/keys"}, "reading vault key file"},
		{"bad inline", KeySource{Keys: "v1:" + k1[:20]}, "LATCHKEY_VAULT_KEYS"},
		{"nothing, no dev dir", KeySource{}, "LATCHKEY_VAULT_KEYS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			keys, err := LoadKeys(tc.src, logging.Discard())
			if tc.wantErr == "" {
				if err != nil || !strings.HasPrefix(keys, "v1:") {
					t.Fatalf("LoadKeys = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), k1[:20]) {
				t.Fatalf("the error quotes key material: %v", err)
			}
		})
	}
	if _, err := LoadKeys(KeySource{}, logging.Discard()); !errors.Is(err, ErrNoKeys) {
		t.Errorf("no keys: %v, want ErrNoKeys", err)
	}
}

func TestDevKeyIsGeneratedOnceAndNeverLogged(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	first, err := LoadKeys(KeySource{DevDir: dir}, log)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, DevKeyFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	second, err := LoadKeys(KeySource{DevDir: dir}, log)
	if err != nil || second != first {
		t.Fatalf("second start did not reuse the key: %v", err)
	}
	if n := strings.Count(logs.String(), "generated the vault root key"); n != 1 {
		t.Errorf("said it generated the key %d times, want once:\n%s", n, logs.String())
	}
	_, b64, _ := strings.Cut(first, ":")
	if strings.Contains(logs.String(), b64) {
		t.Error("the generated key was logged")
	}
	// A group-readable key file is used, with a warning.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeys(KeySource{DevDir: dir}, log); err != nil || !strings.Contains(logs.String(), "chmod 600") {
		t.Errorf("no warning about a readable key file: %v", err)
	}
}

func TestConfigNeverPrintsKeys(t *testing.T) {
	t.Parallel()
	k := newKey()
	cfg := Config{Keys: "v1:" + k}
	src := KeySource{Keys: "v1:" + k}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "cfg", cfg, "src", src)
	for _, out := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v %#v %s", cfg, cfg, cfg), fmt.Sprintf("%+v %#v", src, src), logs.String()} {
		if strings.Contains(out, k[:16]) {
			t.Errorf("key printed: %s", out)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	deps := Deps{Logger: logging.Discard(), Tracer: noop.NewTracerProvider()}
	_, _, deps.JS = testkit.NATS(t)
	if _, err := New(Config{}, deps); !errors.Is(err, ErrNoKeys) {
		t.Errorf("no keys: %v", err)
	}
	if _, err := New(Config{Keys: "v1:short"}, deps); err == nil {
		t.Error("a malformed key was accepted")
	}
}

// startVault runs the vault behind a real gRPC server with the internal token
// "internal" and admin key "lk_admin", and returns a client calling as service.
func startVault(tb testing.TB, service, token string) vaultv1.VaultServiceClient {
	tb.Helper()
	_, _, js := testkit.NATS(tb)
	srv := server.NewForTests(tb, server.NewAuthenticator("internal", "lk_admin", nil))
	svc, err := New(Config{Keys: "v1:" + newKey()}, Deps{Logger: logging.Discard(), Tracer: noop.NewTracerProvider(), JS: js})
	if err != nil {
		tb.Fatal(err)
	}
	svc.Register(srv)
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	if err := svc.Start(tb.Context()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = svc.Stop(tb.Context()) })
	cc, err := server.Dial(srv.GRPCAddr(), server.DialOptions{Token: token, Service: service})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return vaultv1.NewVaultServiceClient(cc)
}

func TestOverGRPCTheCallerIsAudited(t *testing.T) {
	t.Parallel()
	c := startVault(t, "latchkey-browser-runner", "internal")
	ctx := t.Context()
	if _, err := c.PutSecret(ctx, &vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: "login", Fields: map[string]string{"password": "pw"}}); err != nil {
		t.Fatal(err)
	}
	r, err := c.GetSecret(ctx, &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: "login", Reason: &vaultv1.AccessReason{Purpose: "run:r1", RunId: "r1"}})
	if err != nil || r.GetFields()["password"] != "pw" {
		t.Fatalf("GetSecret: %v", err)
	}
	a, err := c.ListAuditEvents(ctx, &vaultv1.ListAuditEventsRequest{ProjectId: "acme"})
	if err != nil || len(a.GetEvents()) != 1 || a.GetEvents()[0].GetCaller() != "latchkey-browser-runner" {
		t.Fatalf("audit = %v, %v; want one event by latchkey-browser-runner", a.GetEvents(), err)
	}
	_, err = startVault(t, "", "lk_admin").KeyStatus(ctx, &vaultv1.KeyStatusRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the admin key: %v, want PermissionDenied", err)
	}
}

// BenchmarkGetSecretGRPC reads a secret through a real gRPC server (loopback, token
// auth, audit event published to JetStream and acknowledged).
func BenchmarkGetSecretGRPC(b *testing.B) {
	c := startVault(b, "bench", "internal")
	if _, err := c.PutSecret(b.Context(), &vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: "login", Fields: map[string]string{"username": "alice", "password": "pw", "totp_secret": "JBSWY3DPEHPK3PXP"}}); err != nil {
		b.Fatal(err)
	}
	req := &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: "login", Reason: &vaultv1.AccessReason{Purpose: "bench"}}
	for b.Loop() {
		if _, err := c.GetSecret(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
}
