package engine

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/chrome"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
	"github.com/latchkey/latchkey/libs/storagestate"
	"github.com/latchkey/latchkey/libs/testkit"
)

// sharedPool is the one Chromium of this test binary; tests open fresh contexts on it.
var sharedPool *chrome.Pool

// testBackend implements StateStore, BundleStore and Vault in memory, sealing with
// AES-GCM bound to project, kind and id, as the vault does.
type testBackend struct {
	mu      sync.Mutex
	aead    cipher.AEAD
	states  map[string]map[int64][]byte // project/session -> revision -> ciphertext
	vars    map[string]map[string]string
	secrets map[string]map[string]string
	files   []recipe.File
	opens   []string // purposes of every Open and Secret, for audit assertions
	// openDown and sealDown make Open and Seal fail as the gRPC backend does when the
	// vault is out of reach.
	openDown, sealDown atomic.Bool
}

// errVaultDown is what the gRPC backend returns when the vault is unreachable.
var errVaultDown = sdk.Infra("sealing: rpc error: code = Unavailable desc = connection refused")

func newTestBackend(t testing.TB, files []recipe.File) *testBackend {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return &testBackend{aead: aead, states: map[string]map[int64][]byte{}, vars: map[string]map[string]string{},
		secrets: map[string]map[string]string{}, files: files}
}

func aad(s sdk.Sealed) []byte { return []byte(s.Project + "\x00" + s.Kind + "\x00" + s.ID) }

func (b *testBackend) Seal(_ context.Context, to sdk.Sealed, plaintext []byte) ([]byte, error) {
	if b.sealDown.Load() {
		return nil, errVaultDown
	}
	nonce := make([]byte, b.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return b.aead.Seal(nonce, nonce, plaintext, aad(to)), nil
}

func (b *testBackend) Open(_ context.Context, from sdk.Sealed, c []byte, runID string) ([]byte, error) {
	if b.openDown.Load() {
		return nil, errVaultDown
	}
	b.mu.Lock()
	b.opens = append(b.opens, from.Kind+":run:"+runID)
	b.mu.Unlock()
	n := b.aead.NonceSize()
	if len(c) < n {
		return nil, errors.New("ciphertext too short")
	}
	return b.aead.Open(nil, c[:n], c[n:], aad(from))
}

func (b *testBackend) Secret(_ context.Context, project, id, runID string) (map[string]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.opens = append(b.opens, "secret:run:"+runID)
	f, ok := b.secrets[project+"/"+id]
	if !ok {
		return nil, fmt.Errorf("secret %s not found", id)
	}
	return f, nil
}

func (b *testBackend) StorageState(_ context.Context, project, session string, rev int64) ([]byte, int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	revs := b.states[project+"/"+session]
	if rev == 0 {
		for r := range revs {
			rev = max(rev, r)
		}
	}
	c, ok := revs[rev]
	if !ok {
		return nil, 0, fmt.Errorf("state revision %d not found", rev)
	}
	return c, rev, nil
}

func (b *testBackend) SessionVars(_ context.Context, project, session string) (map[string]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.vars[project+"/"+session], nil
}

func (b *testBackend) Bundle(context.Context, string, string, int64) ([]recipe.File, int64, error) {
	return b.files, 1, nil
}

// putState seals st as the session's revision rev.
func (b *testBackend) putState(t testing.TB, project, session string, rev int64, st *latchkeyv1.StorageState) []byte {
	t.Helper()
	plain, err := storagestate.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := b.Seal(context.Background(), sdk.Sealed{Project: project, Kind: storagestate.CryptoKind, ID: session}, plain)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.states[project+"/"+session] == nil {
		b.states[project+"/"+session] = map[int64][]byte{}
	}
	b.states[project+"/"+session][rev] = c
	return c
}

// openState opens a captured state.
func (b *testBackend) openState(t testing.TB, project, session string, c []byte) *latchkeyv1.StorageState {
	t.Helper()
	plain, err := b.Open(context.Background(), sdk.Sealed{Project: project, Kind: storagestate.CryptoKind, ID: session}, c, "test")
	if err != nil {
		t.Fatalf("opening captured state: %v", err)
	}
	st, err := storagestate.Unmarshal(plain)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// portalBundle is the demo portal's bundle, plus extra files.
func portalBundle(t testing.TB, extra ...recipe.File) []recipe.File {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "..", "examples", "portal", "automations")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []recipe.File
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, recipe.File{Path: e.Name(), Content: b})
	}
	return append(files, extra...)
}

// loggedInState logs u in over HTTP and returns the browser state a logged-in
// browser would have: the HttpOnly session cookie and the API token in localStorage.
func loggedInState(t testing.TB, base string, u portal.User) *latchkeyv1.StorageState {
	t.Helper()
	c := portaltest.Login(t, base, u)
	var tok struct{ Token string }
	if err := json.Unmarshal([]byte(portaltest.Get(t, c, base+"/api/token")), &tok); err != nil || tok.Token == "" {
		t.Fatalf("reading the API token: %v", err)
	}
	bu, _ := url.Parse(base)
	st := &latchkeyv1.StorageState{Origins: []*latchkeyv1.OriginStorage{{
		Origin: base, LocalStorage: []*latchkeyv1.StorageItem{{Name: "portal_token", Value: tok.Token}},
	}}}
	for _, ck := range c.Jar.Cookies(bu) {
		if ck.Name == portal.SessionCookie {
			st.Cookies = append(st.Cookies, &latchkeyv1.Cookie{Name: ck.Name, Value: ck.Value, Domain: bu.Hostname(), Path: "/", Expires: -1, HttpOnly: true, SameSite: "Lax"})
		}
	}
	if len(st.Cookies) == 0 {
		t.Fatal("login left no session cookie")
	}
	return st
}

// cookieValue returns the named cookie's value in st.
func cookieValue(st *latchkeyv1.StorageState, name string) string {
	for _, c := range st.GetCookies() {
		if c.GetName() == name {
			return c.GetValue()
		}
	}
	return ""
}

// apiMe asks the portal who a session cookie belongs to.
func apiMe(t testing.TB, base, cookie string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/api/me", nil)
	req.AddCookie(&http.Cookie{Name: portal.SessionCookie, Value: cookie})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// newTestRunner returns a runner on the shared browser with b as its backends.
func newTestRunner(t testing.TB, cfg Config, b *testBackend, deps Deps) *Runner {
	t.Helper()
	if cfg.Pool == "" {
		cfg.Pool = "test"
	}
	cfg.ChromiumPath = testkit.ChromiumPath(t)
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if b != nil {
		deps.States, deps.Vault, deps.Bundles = b, b, b
	}
	if deps.Tracer == nil {
		deps.Tracer, _ = newTracer(t)
	}
	r, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	r.attach(sharedPool, false)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = r.Stop(ctx)
	})
	return r
}

var taskSeq struct {
	sync.Mutex
	n int
}

// task builds a task for a session (empty: none).
func task(kind runnerv1.TaskKind, api, project, session string, rev int64, params map[string]any) *runnerv1.RunnerTask {
	taskSeq.Lock()
	taskSeq.n++
	n := taskSeq.n
	taskSeq.Unlock()
	t := &runnerv1.RunnerTask{
		TaskId: fmt.Sprintf("task-%d", n), RunId: fmt.Sprintf("run-%d", n), ProjectId: project, Kind: kind, Api: api,
		Deadline: timestamppb.New(time.Now().Add(time.Minute)), Attempt: 1,
	}
	if session != "" {
		t.Session = &runnerv1.SessionRef{AuthSessionId: session, Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, StateRevision: rev}
	}
	if params != nil {
		s, _ := structpb.NewStruct(params)
		t.Params = s
	}
	return t
}

// logBuffer is a concurrency-safe buffer for a test's logs.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func slogJSON(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func contains(s, sub string) bool { return sub != "" && bytes.Contains([]byte(s), []byte(sub)) }

// newTracer returns a tracer provider that records every span.
func newTracer(t testing.TB) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, rec
}
