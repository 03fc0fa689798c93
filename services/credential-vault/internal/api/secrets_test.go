package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/logging"
	"github.com/latchkey/latchkey/services/credential-vault/internal/api"
)

func TestSecretRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cases := map[string]map[string]string{
		"login":        {"username": "alice@example.com", "password": "correct horse battery staple"},
		"totp":         {"username": "bob", "password": "pw", "totp_secret": "JBSWY3DPEHPK3PXP"},
		"unicode":      {"password": "pässwörd ✓ 密码", "note": ""},
		"largest":      {"blob": strings.Repeat("x", api.MaxFieldValueBytes)},
		"many fields":  manyFields(api.MaxFields),
		"dotted.names": {"proxy.password": "p", "api-key": "k"},
	}
	for name, fields := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			id := strings.ReplaceAll(strings.ReplaceAll(name, " ", "-"), ".", "-")
			rev := e.put(t, "acme", id, fields)
			got, err := e.get(t, "acme", id)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(fields, got); diff != "" {
				t.Fatalf("fields (-put +got):\n%s", diff)
			}
			r, _ := e.GetSecret(caller(t.Context(), "test"), &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: id})
			if r.GetRevision() != rev {
				t.Errorf("revision = %d, PutSecret said %d", r.GetRevision(), rev)
			}
		})
	}
}

func manyFields(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m["f"+strings.Repeat("x", i)] = "v"
	}
	return m
}

func TestStoredSecretsAreCiphertext(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.put(t, "acme", "login", map[string]string{"password": "canary-7f3a9"})
	entry, err := e.kv.Get(t.Context(), "secret.acme.login")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(entry.Value(), []byte("canary-7f3a9")) || bytes.Contains(entry.Value(), []byte("password")) {
		t.Fatal("the stored record holds the plaintext")
	}
}

func TestPutSecretCompareAndSwap(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	put := func(rev uint64, overwrite bool, pw string) (uint64, error) {
		r, err := e.PutSecret(ctx, &vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: "s", Fields: map[string]string{"password": pw}, ExpectedRevision: rev, Overwrite: overwrite})
		return r.GetRevision(), err
	}
	r1, err := put(0, false, "one")
	if err != nil {
		t.Fatal(err)
	}
	_, err = put(0, false, "two")
	wantCode(t, err, codes.AlreadyExists)
	_, err = put(r1+100, false, "two")
	wantCode(t, err, codes.FailedPrecondition)
	r2, err := put(r1, false, "two")
	if err != nil || r2 <= r1 {
		t.Fatalf("update at the current revision: %d, %v", r2, err)
	}
	_, err = put(r1, true, "stale")
	wantCode(t, err, codes.FailedPrecondition) // an expected revision wins over overwrite
	if _, err := put(0, true, "three"); err != nil {
		t.Fatalf("overwrite: %v", err)
	}
	got, err := e.get(t, "acme", "s")
	if err != nil || got["password"] != "three" {
		t.Fatalf("after overwrite: %v", err)
	}

	if _, err := e.DeleteSecret(ctx, &vaultv1.DeleteSecretRequest{ProjectId: "acme", SecretId: "s"}); err != nil {
		t.Fatal(err)
	}
	_, err = e.get(t, "acme", "s")
	wantCode(t, err, codes.NotFound)
	if _, err := e.DeleteSecret(ctx, &vaultv1.DeleteSecretRequest{ProjectId: "acme", SecretId: "s"}); err != nil {
		t.Fatalf("deleting a missing secret: %v", err)
	}
	if _, err := put(0, false, "again"); err != nil {
		t.Fatalf("re-creating a deleted secret: %v", err)
	}
}

func TestSecretsStayInTheirProject(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.put(t, "acme", "login", map[string]string{"password": "a"})
	e.put(t, "globex", "other", map[string]string{"password": "b"})
	_, err := e.get(t, "globex", "login")
	wantCode(t, err, codes.NotFound)

	// A stored record copied under another project's or secret's key (a KV-level
	// attack) does not open there.
	entry, err := e.kv.Get(t.Context(), "secret.acme.login")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"secret.globex.login", "secret.acme.copy"} {
		if _, err := e.kv.Put(t.Context(), key, entry.Value()); err != nil {
			t.Fatal(err)
		}
		_, id, _ := strings.Cut(strings.TrimPrefix(key, "secret."), ".")
		project, _, _ := strings.Cut(strings.TrimPrefix(key, "secret."), ".")
		_, err := e.get(t, project, id)
		wantCode(t, err, codes.InvalidArgument)
	}
}

type failingReader struct{ after int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, errors.New("entropy exhausted")
	}
	f.after--
	return rand.Read(p)
}

func TestNoRandomnessWritesNothing(t *testing.T) {
	t.Parallel()
	// Enough randomness for the project's material, none for the data key.
	e := newEnv(t, func(o *options) { o.rand = &failingReader{after: 1} })
	_, err := e.PutSecret(t.Context(), &vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: "s", Fields: map[string]string{"password": "x"}})
	wantCode(t, err, codes.Internal)
	if strings.Contains(status.Convert(err).Message(), "entropy") {
		t.Errorf("an internal error leaked its cause to the client: %v", err)
	}
	_, err = e.get(t, "acme", "s")
	wantCode(t, err, codes.NotFound)
}

func TestUnavailableUntilOpen(t *testing.T) {
	t.Parallel()
	s := api.New(api.Deps{Logger: logging.Discard(), Tracer: noop.NewTracerProvider().Tracer("")})
	ctx := context.Background()
	_, err := s.GetSecret(ctx, &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: "s"})
	wantCode(t, err, codes.Unavailable)
	_, err = s.Encrypt(ctx, &vaultv1.EncryptRequest{Context: cctx("acme", "storage_state", "s"), Plaintext: []byte("x")})
	wantCode(t, err, codes.Unavailable)
	_, err = s.KeyStatus(ctx, &vaultv1.KeyStatusRequest{})
	wantCode(t, err, codes.Unavailable)
}
