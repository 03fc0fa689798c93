package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/status"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/testkit"
)

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestVaultCanaryAppearsNowhere plants a canary password and a storage state with a
// canary cookie, drives the vault through every operation (errors included), then
// scans the JetStream store on disk, Redis, the logs and the spans: the canaries are
// in none of them. Each scan first finds a planted probe, so a scan that reads
// nothing cannot pass.
func TestVaultCanaryAppearsNowhere(t *testing.T) {
	t.Parallel()
	rs := testkit.Redis(t)
	spans := tracetest.NewInMemoryExporter()
	st := stacktest.Start(t, stacktest.Options{Env: map[string]string{"LATCHKEY_REDIS_URL": rs.URL()}, SpanExporter: spans})
	vc := vaultv1.NewVaultServiceClient(st.Dial(t, st.InternalToken))

	password, cookie := "canary-pw-"+randomHex(t), "canary-cookie-"+randomHex(t)
	marker := "audit-marker-" + randomHex(t) // not secret: must reach the store
	canaries := [][]byte{[]byte(password), []byte(cookie)}
	driveVault(t, vc, password, cookie, marker)

	// JetStream's files, once the marker (written by the last audit event) is there.
	natsDir := filepath.Join(st.Config.DataDir, "nats")
	waitUntil(t, "the audit marker to reach the JetStream files", func() bool { return len(scanDir(t, natsDir, [][]byte{[]byte(marker)})) > 0 })
	if found := scanDir(t, natsDir, encodings(canaries)); len(found) > 0 {
		t.Errorf("canary in JetStream files: %v", found)
	}

	// Redis: every key and value.
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { rc.Close() })
	probe := "probe-" + randomHex(t)
	if err := rc.HSet(t.Context(), "e2e-probe", "f", probe).Err(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(redisDump(t, rc), []byte(probe)) {
		t.Fatal("the Redis scan does not see a planted probe")
	}
	if dump := redisDump(t, rc); containsAny(dump, encodings(canaries)) {
		t.Error("canary in Redis")
	}

	// Logs and spans.
	logs := st.Logs.String()
	if !strings.Contains(logs, "rotated the master key") {
		t.Fatal("the captured logs lack the vault's own lines")
	}
	if containsAny([]byte(logs), encodings(canaries)) {
		t.Errorf("canary in the logs:\n%s", logs)
	}
	got := spans.GetSpans()
	text := spanText(got)
	if !strings.Contains(text, "vault open") || !strings.Contains(text, "acme") {
		t.Fatalf("the spans lack the vault's own (%d spans)", len(got))
	}
	if containsAny([]byte(text), encodings(canaries)) {
		t.Error("canary in the spans")
	}
}

// driveVault runs every vault operation with the canaries in play, including
// failing ones whose errors must not echo them.
func driveVault(t *testing.T, vc vaultv1.VaultServiceClient, password, cookie, marker string) {
	t.Helper()
	ctx := t.Context()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	refused := func(_ any, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("a bad request succeeded")
		}
		if msg := status.Convert(err).Message(); strings.Contains(msg, password) || strings.Contains(msg, cookie) {
			t.Fatalf("an error echoes a canary: %s", msg)
		}
	}
	reason := &vaultv1.AccessReason{Purpose: "run:r1", RunId: "r1"}
	state := []byte(fmt.Sprintf(`{"cookies":[{"name":"sid","value":%q,"domain":"portal.test"}],"origins":[]}`, cookie))
	blob := &vaultv1.CryptoContext{ProjectId: "acme", Kind: "storage_state", Id: "s1"}

	must(vc.PutSecret(ctx, &vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: "session-s1", Fields: map[string]string{"username": "alice", "password": password}}))
	must(vc.GetSecret(ctx, &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: "session-s1", Reason: reason}))
	enc, err := vc.Encrypt(ctx, &vaultv1.EncryptRequest{Context: blob, Plaintext: state})
	must(enc, err)
	must(vc.Decrypt(ctx, &vaultv1.DecryptRequest{Context: blob, Ciphertext: enc.GetCiphertext(), Reason: reason}))
	must(vc.RotateKey(ctx, &vaultv1.RotateKeyRequest{}))
	must(vc.Rewrap(ctx, &vaultv1.RewrapRequest{}))
	re, err := vc.Rewrap(ctx, &vaultv1.RewrapRequest{Context: blob, Ciphertext: enc.GetCiphertext()})
	must(re, err)
	must(vc.KeyStatus(ctx, &vaultv1.KeyStatusRequest{}))

	refused(vc.PutSecret(ctx, &vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: "bad", Fields: map[string]string{"bad name": password}}))
	refused(vc.PutSecret(ctx, &vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: "big", Fields: map[string]string{"password": password + strings.Repeat("x", 20000)}}))
	refused(vc.Decrypt(ctx, &vaultv1.DecryptRequest{Context: &vaultv1.CryptoContext{ProjectId: "acme", Kind: "storage_state", Id: "s2"}, Ciphertext: re.GetCiphertext()}))
	refused(vc.Decrypt(ctx, &vaultv1.DecryptRequest{Context: blob, Ciphertext: state}))
	refused(vc.Encrypt(ctx, &vaultv1.EncryptRequest{Context: &vaultv1.CryptoContext{ProjectId: "acme", Kind: "secret", Id: cookie}, Plaintext: state}))
	refused(vc.PutSecret(ctx, &vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: "session-s1", Fields: map[string]string{"password": password}}))

	must(vc.ShredProject(ctx, &vaultv1.ShredProjectRequest{ProjectId: "globex"}))
	must(vc.ListAuditEvents(ctx, &vaultv1.ListAuditEventsRequest{ProjectId: "acme"}))
	must(vc.Decrypt(ctx, &vaultv1.DecryptRequest{Context: blob, Ciphertext: re.GetCiphertext(), Reason: &vaultv1.AccessReason{Purpose: marker}}))
}

func redisDump(t *testing.T, rc *redis.Client) []byte {
	t.Helper()
	ctx := t.Context()
	var out bytes.Buffer
	iter := rc.Scan(ctx, 0, "*", 0).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		out.WriteString(key + "\n")
		typ, err := rc.Type(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		var v any
		switch typ {
		case "string":
			v, err = rc.Get(ctx, key).Result()
		case "hash":
			v, err = rc.HGetAll(ctx, key).Result()
		case "list":
			v, err = rc.LRange(ctx, key, 0, -1).Result()
		case "set":
			v, err = rc.SMembers(ctx, key).Result()
		case "zset":
			v, err = rc.ZRangeWithScores(ctx, key, 0, -1).Result()
		case "stream":
			v, err = rc.XRange(ctx, key, "-", "+").Result()
		default:
			t.Fatalf("redis key %q has type %q, which this scan cannot read", key, typ)
		}
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&out, "%v\n", v)
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// spanText renders everything a span exporter would send.
func spanText(spans tracetest.SpanStubs) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "%s %s %s\n", s.Name, s.Status.Code, s.Status.Description)
		for _, a := range s.Attributes {
			fmt.Fprintf(&b, "%s=%s\n", a.Key, a.Value.Emit())
		}
		for _, e := range s.Events {
			fmt.Fprintf(&b, "event %s\n", e.Name)
			for _, a := range e.Attributes {
				fmt.Fprintf(&b, "%s=%s\n", a.Key, a.Value.Emit())
			}
		}
		for _, l := range s.Links {
			for _, a := range l.Attributes {
				fmt.Fprintf(&b, "link %s=%s\n", a.Key, a.Value.Emit())
			}
		}
	}
	return b.String()
}
