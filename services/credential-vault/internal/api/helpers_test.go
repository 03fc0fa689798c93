package api_test

import (
	"context"
	"crypto/rand"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/latchkey/latchkey/libs/bus"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/logging"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/libs/testkit"
	"github.com/latchkey/latchkey/services/credential-vault/internal/api"
	"github.com/latchkey/latchkey/services/credential-vault/internal/audit"
	"github.com/latchkey/latchkey/services/credential-vault/internal/keyring"
	"github.com/latchkey/latchkey/services/credential-vault/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testkit.LibraryGoroutines()...) }

// env is a vault API over a private NATS server, with what tests inspect.
type env struct {
	*api.Server
	js    jetstream.JetStream
	nc    *nats.Conn
	kv    jetstream.KeyValue
	keys  *keyring.Keeper
	spans *tracetest.InMemoryExporter
}

type options struct {
	rand io.Reader
}

func newEnv(t testing.TB, opts ...func(*options)) *env {
	t.Helper()
	o := options{rand: rand.Reader}
	for _, f := range opts {
		f(&o)
	}
	_, nc, js := testkit.NATS(t)
	kv, err := js.KeyValue(t.Context(), bus.BucketSecrets)
	if err != nil {
		t.Fatal(err)
	}
	var root keyring.Key
	if _, err := rand.Read(root[:]); err != nil {
		t.Fatal(err)
	}
	keys, err := keyring.Open(t.Context(), kv, keyring.Options{Roots: keyring.Roots{1: root}, Rand: rand.Reader, Now: time.Now, Logger: logging.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(keys.Close)
	spans := tracetest.NewInMemoryExporter()
	tracer := trace.NewTracerProvider(trace.WithSyncer(spans)).Tracer("test")
	s := api.New(api.Deps{
		Audit: audit.New(js, tracer, bus.Propagator(), o.rand),
		Rand:  o.rand, Now: time.Now, Tracer: tracer, Logger: logging.Discard(),
	})
	s.Open(keys, store.New(kv, o.rand, time.Now))
	return &env{Server: s, js: js, nc: nc, kv: kv, keys: keys, spans: spans}
}

// caller is the context of a call from the named service, as the server's auth
// interceptor builds it.
func caller(ctx context.Context, service string) context.Context {
	return server.WithPrincipal(ctx, server.Principal{Service: service})
}

func (e *env) put(t testing.TB, project, id string, fields map[string]string) uint64 {
	t.Helper()
	r, err := e.PutSecret(t.Context(), &vaultv1.PutSecretRequest{ProjectId: project, SecretId: id, Fields: fields, Overwrite: true})
	if err != nil {
		t.Fatalf("PutSecret(%s/%s): %v", project, id, err)
	}
	return r.GetRevision()
}

func (e *env) get(t testing.TB, project, id string) (map[string]string, error) {
	t.Helper()
	r, err := e.GetSecret(caller(t.Context(), "test"), &vaultv1.GetSecretRequest{ProjectId: project, SecretId: id, Reason: &vaultv1.AccessReason{Purpose: "test"}})
	return r.GetFields(), err
}

func cctx(project, kind, id string) *vaultv1.CryptoContext {
	return &vaultv1.CryptoContext{ProjectId: project, Kind: kind, Id: id}
}

func (e *env) encrypt(t testing.TB, c *vaultv1.CryptoContext, pt []byte) *vaultv1.EncryptResponse {
	t.Helper()
	r, err := e.Encrypt(t.Context(), &vaultv1.EncryptRequest{Context: c, Plaintext: pt})
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	return r
}

func (e *env) decrypt(t testing.TB, c *vaultv1.CryptoContext, ct []byte) ([]byte, error) {
	t.Helper()
	r, err := e.Decrypt(caller(t.Context(), "test"), &vaultv1.DecryptRequest{Context: c, Ciphertext: ct, Reason: &vaultv1.AccessReason{Purpose: "test"}})
	return r.GetPlaintext(), err
}

// wantCode fails the test unless err has code.
func wantCode(t testing.TB, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want code %s", err, code)
	}
}
