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
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/testkit"
)

// TestRegistryCanaryAppearsNowhere creates a CREDENTIALS session with a canary
// password (and a canary proxy password), imports a state with a canary cookie value
// and a canary localStorage value, drives the public and internal APIs, then scans
// the JetStream files on disk, Redis keys and values, the logs and the spans: no
// canary is in any of them. Each scan first finds a probe it must find, so a scan
// that reads nothing cannot pass.
func TestRegistryCanaryAppearsNowhere(t *testing.T) {
	t.Parallel()
	rs := testkit.Redis(t)
	spans := tracetest.NewInMemoryExporter()
	r := startRegistry(t, stacktest.Options{Env: map[string]string{"LATCHKEY_REDIS_URL": rs.URL()}, SpanExporter: spans})
	ctx := t.Context()
	rnd := func(prefix string) string {
		b := make([]byte, 10)
		_, _ = rand.Read(b)
		return prefix + hex.EncodeToString(b)
	}
	password, proxyPW, cookie, token, newPW := rnd("canary-pw-"), rnd("canary-proxy-"), rnd("canary-cookie-"), rnd("canary-token-"), rnd("canary-newpw-")
	probe := rnd("probe-") // a label: not secret, so it must reach the store
	canaries := [][]byte{[]byte(password), []byte(proxyPW), []byte(cookie), []byte(token), []byte(newPW)}

	c := r.newProject(t, "acme")
	c.deployPortal(t)
	created := c.createSession(t, &latchkeyv1.CreateAuthSessionRequest{
		AuthSessionId: "canary", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS,
		Credentials: map[string]string{"username": "alice", "password": password},
		Proxy:       &latchkeyv1.Proxy{Server: "http://127.0.0.1:3128", Username: "u", Password: proxyPW},
		Labels:      map[string]string{"probe": probe},
	})
	state := fmt.Sprintf(`{"cookies":[{"name":"sid","value":%q,"domain":"127.0.0.1","path":"/","expires":1893456000}],
		"origins":[{"origin":"http://127.0.0.1:7490","localStorage":[{"name":"apiToken","value":%q}]}]}`, cookie, token)
	if _, err := c.sessions.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "canary", StorageStateJson: []byte(state)}); err != nil {
		t.Fatal(err)
	}
	exp, err := c.sessions.ExportStorageState(ctx, &latchkeyv1.ExportStorageStateRequest{AuthSessionId: "canary"})
	if err != nil || !bytes.Contains(exp.GetStorageStateJson(), []byte(cookie)) {
		t.Fatalf("export: %v", err)
	}
	sealed, err := r.internal.GetStorageState(ctx, &registryv1.GetStorageStateRequest{ProjectId: "acme", AuthSessionId: "canary"})
	if err != nil {
		t.Fatal(err)
	}
	upd, err := c.sessions.UpdateAuthSessionCredentials(ctx, &latchkeyv1.UpdateAuthSessionCredentialsRequest{AuthSessionId: "canary", Credentials: map[string]string{"password": newPW}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.internal.CompleteCredentialsUpdate(ctx, &registryv1.CompleteCredentialsUpdateRequest{ProjectId: "acme", AuthSessionId: "canary", RunId: upd.GetUpdateRunId(), Succeeded: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.sessions.UpdateAuthSession(ctx, &latchkeyv1.UpdateAuthSessionRequest{
		AuthSession: &latchkeyv1.AuthSession{Id: "canary", Proxy: &latchkeyv1.Proxy{Server: "http://127.0.0.1:3129", Username: "u", Password: proxyPW}},
		UpdateMask:  &fieldmaskpb.FieldMask{Paths: []string{"proxy"}},
	}); err != nil {
		t.Fatal(err)
	}
	// Failures too: a bad state quoting the canary, a bad credentials update.
	_, _ = c.sessions.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "canary", StorageStateJson: []byte(`{"cookies":[{"name":"sid","value":"` + cookie + `","sameSite":"bad","domain":"x"}]}`)})
	_, _ = c.sessions.UpdateAuthSessionCredentials(ctx, &latchkeyv1.UpdateAuthSessionCredentialsRequest{AuthSessionId: "canary", Credentials: map[string]string{"bad name!": password}})
	if _, err := c.sessions.GetAuthSession(ctx, &latchkeyv1.GetAuthSessionRequest{AuthSessionId: created.GetAuthSession().GetId()}); err != nil {
		t.Fatal(err)
	}

	// JetStream's files on disk.
	natsDir := filepath.Join(r.Config.DataDir, "nats")
	waitUntil(t, "the probe label to reach the JetStream files", func() bool {
		return len(scanDir(t, natsDir, [][]byte{[]byte(probe)})) > 0
	})
	if found := scanDir(t, natsDir, encodings(canaries)); len(found) > 0 {
		t.Errorf("canary in JetStream files: %v", found)
	}

	// Redis: every key and value; it must hold the state's ciphertext.
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rc.Close()
	keys, err := rc.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var dump bytes.Buffer
	for _, k := range keys {
		v, _ := rc.Get(ctx, k).Bytes()
		dump.WriteString(k)
		dump.Write(v)
	}
	if !bytes.Contains(dump.Bytes(), sealed.GetCiphertext()) {
		t.Fatalf("Redis does not hold the state's ciphertext (keys %v): the scan would prove nothing", keys)
	}
	if containsAny(dump.Bytes(), encodings(canaries)) {
		t.Error("canary in Redis")
	}

	// Logs: they name the session, never a secret.
	logs := r.Logs.String()
	if !strings.Contains(logs, `"auth_session_id":"canary"`) {
		t.Fatal("the logs do not mention the session: the scan would prove nothing")
	}
	if containsAny([]byte(logs), encodings(canaries)) {
		t.Error("canary in the logs")
	}

	// Spans: names, attributes, events and status of every span.
	var text strings.Builder
	for _, s := range spans.GetSpans() {
		fmt.Fprintf(&text, "%s %s %v", s.Name, s.Status.Description, s.Attributes)
		for _, e := range s.Events {
			fmt.Fprintf(&text, " %s %v", e.Name, e.Attributes)
		}
		text.WriteByte('\n')
	}
	if !strings.Contains(text.String(), "ImportStorageState") || !strings.Contains(text.String(), "publish session event") {
		t.Fatalf("no registry spans recorded: the scan would prove nothing\n%s", text.String())
	}
	if containsAny([]byte(text.String()), encodings(canaries)) {
		t.Error("canary in a span")
	}
}
