package e2e

import (
	"fmt"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/storagestate"
	"github.com/latchkey/latchkey/libs/testkit"
)

// regRunner plays a runner's side of storage states over the internal APIs: read and
// open the newest state, seal and write back.
type regRunner struct {
	r       *registryStack
	t       *testing.T
	session string
}

func (w regRunner) read() (*latchkeyv1.StorageState, int64) {
	w.t.Helper()
	st, rev, err := w.load()
	if err != nil {
		w.t.Fatal(err)
	}
	return st, rev
}

// load is read for goroutines other than the test's: it returns its error.
func (w regRunner) load() (*latchkeyv1.StorageState, int64, error) {
	ctx := w.t.Context()
	got, err := w.r.internal.GetStorageState(ctx, &registryv1.GetStorageStateRequest{ProjectId: "acme", AuthSessionId: w.session})
	if err != nil {
		return nil, 0, fmt.Errorf("GetStorageState: %w", err)
	}
	dec, err := w.r.vault.Decrypt(ctx, &vaultv1.DecryptRequest{Context: storagestate.CryptoContext("acme", w.session), Ciphertext: got.GetCiphertext(), Reason: &vaultv1.AccessReason{Purpose: "run:test"}})
	if err != nil {
		return nil, 0, fmt.Errorf("Decrypt: %w", err)
	}
	st, err := storagestate.Unmarshal(dec.GetPlaintext())
	if err != nil {
		return nil, 0, fmt.Errorf("unmarshaling the state: %w", err)
	}
	return st, got.GetRevision(), nil
}

func (w regRunner) write(st *latchkeyv1.StorageState, base int64) error {
	ctx := w.t.Context()
	plain, err := storagestate.Marshal(st)
	if err != nil {
		return err
	}
	enc, err := w.r.vault.Encrypt(ctx, &vaultv1.EncryptRequest{Context: storagestate.CryptoContext("acme", w.session), Plaintext: plain})
	if err != nil {
		return err
	}
	_, err = w.r.internal.PutStorageState(ctx, &registryv1.PutStorageStateRequest{ProjectId: "acme", AuthSessionId: w.session, Ciphertext: enc.GetCiphertext(), BaseRevision: base})
	return err
}

// TestRegistryRacingWriteBacksMerge has runners that all started from the same
// revision write back at once through PutStorageState, with the vault sealing: the
// losers get Aborted, merge with libs/storagestate and retry, and no cookie is lost.
func TestRegistryRacingWriteBacksMerge(t *testing.T) {
	t.Parallel()
	r := startRegistry(t, stacktest.Options{})
	c := r.newProject(t, "acme")
	c.deployPortal(t)
	c.createSession(t, &latchkeyv1.CreateAuthSessionRequest{AuthSessionId: "shared", Type: latchkeyv1.SessionType_SESSION_TYPE_RECORDER, Recorder: &latchkeyv1.RecorderSettings{StartUrl: "http://x/"}})
	if _, err := c.sessions.ImportStorageState(t.Context(), &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "shared", StorageStateJson: []byte(regPlaywrightState)}); err != nil {
		t.Fatal(err)
	}
	w := regRunner{r: r, t: t, session: "shared"}
	base, baseRev := w.read()
	const writers = 6
	aborted := make([]int, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			mine := proto.CloneOf(base)
			mine.Cookies = append(mine.Cookies, &latchkeyv1.Cookie{Name: fmt.Sprintf("run%d", i), Value: "v", Domain: "127.0.0.1", Path: "/", Expires: -1})
			from, fromRev := base, baseRev
			for {
				err := w.write(mine, fromRev)
				if status.Code(err) != codes.Aborted {
					if err != nil {
						t.Error(err)
					}
					return
				}
				aborted[i]++
				cur, rev, err := w.load()
				if err != nil {
					t.Error(err) // not Fatal: this is not the test's goroutine
					return
				}
				mine = storagestate.Merge(from, cur, mine)
				from, fromRev = cur, rev
			}
		})
	}
	wg.Wait()
	final, rev := w.read()
	names := map[string]bool{}
	for _, ck := range final.GetCookies() {
		names[ck.GetName()] = true
	}
	total := 0
	for i := range writers {
		total += aborted[i]
		if !names[fmt.Sprintf("run%d", i)] {
			t.Errorf("run%d's cookie was lost: %v", i, names)
		}
	}
	if !names["sid"] || rev != baseRev+writers || total < writers-1 {
		t.Errorf("revision %d from %d, %d aborted writes, cookies %v", rev, baseRev, total, names)
	}
}

// TestRegistryConcurrentTransitions races TransitionSession calls on one etag: one
// wins, each loser gets Aborted with the winner's record (new etag) in the details.
func TestRegistryConcurrentTransitions(t *testing.T) {
	t.Parallel()
	r := startRegistry(t, stacktest.Options{})
	ctx := t.Context()
	c := r.newProject(t, "acme")
	c.deployPortal(t)
	c.createSession(t, &latchkeyv1.CreateAuthSessionRequest{AuthSessionId: "s1", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Credentials: map[string]string{"u": "x"}})
	if _, err := c.sessions.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "s1", StorageStateJson: []byte(regPlaywrightState)}); err != nil {
		t.Fatal(err)
	}
	cur, err := r.internal.GetSession(ctx, &registryv1.GetSessionRequest{ProjectId: "acme", AuthSessionId: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	const racers = 8
	var (
		mu      sync.Mutex
		winners []*latchkeyv1.AuthSession
		losers  []*latchkeyv1.AuthSession
		wg      sync.WaitGroup
	)
	for range racers {
		wg.Go(func() {
			resp, err := r.internal.TransitionSession(ctx, &registryv1.TransitionSessionRequest{
				ProjectId: "acme", AuthSessionId: "s1", ExpectedEtag: cur.GetAuthSession().GetEtag(),
				ToState: latchkeyv1.SessionState_SESSION_STATE_RECREATING, RunId: "run-x",
			})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				winners = append(winners, resp.GetAuthSession())
				return
			}
			st := status.Convert(err)
			if st.Code() != codes.Aborted || len(st.Details()) != 1 {
				t.Errorf("loser got %v with %d details", err, len(st.Details()))
				return
			}
			a, ok := st.Details()[0].(*latchkeyv1.AuthSession)
			if !ok {
				t.Errorf("detail %T", st.Details()[0])
				return
			}
			losers = append(losers, a)
		})
	}
	wg.Wait()
	if len(winners) != 1 || len(losers) != racers-1 {
		t.Fatalf("%d winners, %d losers", len(winners), len(losers))
	}
	for _, l := range losers {
		if l.GetEtag() != winners[0].GetEtag() || l.GetState() != latchkeyv1.SessionState_SESSION_STATE_RECREATING {
			t.Errorf("a loser saw etag %d state %v; the winner wrote %d", l.GetEtag(), l.GetState(), winners[0].GetEtag())
		}
	}
	// An illegal move answers FailedPrecondition with the record.
	_, err = r.internal.TransitionSession(ctx, &registryv1.TransitionSessionRequest{
		ProjectId: "acme", AuthSessionId: "s1", ExpectedEtag: winners[0].GetEtag(), ToState: latchkeyv1.SessionState_SESSION_STATE_RECREATING,
	})
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || len(st.Details()) != 1 {
		t.Fatalf("illegal transition: %v", err)
	}
}

// TestRegistryServesWithRedisDown runs the registry with a Redis cache, kills Redis
// and keeps using it: states are read from JetStream instead.
func TestRegistryServesWithRedisDown(t *testing.T) {
	t.Parallel()
	redis := testkit.Redis(t)
	r := startRegistry(t, stacktest.Options{Env: map[string]string{"LATCHKEY_REDIS_URL": redis.URL()}})
	ctx := t.Context()
	c := r.newProject(t, "acme")
	c.deployPortal(t)
	c.createSession(t, &latchkeyv1.CreateAuthSessionRequest{AuthSessionId: "s1", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Credentials: map[string]string{"u": "x"}})
	if _, err := c.sessions.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "s1", StorageStateJson: []byte(regPlaywrightState)}); err != nil {
		t.Fatal(err)
	}
	warm, err := r.internal.GetStorageState(ctx, &registryv1.GetStorageStateRequest{ProjectId: "acme", AuthSessionId: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	redis.Stop()
	cold, err := r.internal.GetStorageState(ctx, &registryv1.GetStorageStateRequest{ProjectId: "acme", AuthSessionId: "s1"})
	if err != nil || string(cold.GetCiphertext()) != string(warm.GetCiphertext()) {
		t.Fatalf("GetStorageState with Redis down: %v", err)
	}
	if _, err := c.sessions.ExportStorageState(ctx, &latchkeyv1.ExportStorageStateRequest{AuthSessionId: "s1"}); err != nil {
		t.Fatalf("export with Redis down: %v", err)
	}
	c.createSession(t, &latchkeyv1.CreateAuthSessionRequest{AuthSessionId: "s2", Type: latchkeyv1.SessionType_SESSION_TYPE_RUNTIME, Credentials: map[string]string{"u": "x"}})
	imp, err := c.sessions.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "s1", StorageStateJson: []byte(regPlaywrightState)})
	if err != nil || imp.GetAuthSession().GetStateRevision() != 2 {
		t.Fatalf("import with Redis down: %v, %v", imp, err)
	}
}

// TestRegistryRollsBackWhenTheSchedulerFails: when StartRun fails, CreateAuthSession
// and UpdateAuthSessionCredentials answer Unavailable and leave nothing behind.
func TestRegistryRollsBackWhenTheSchedulerFails(t *testing.T) {
	t.Parallel()
	r := startRegistry(t, stacktest.Options{})
	ctx := t.Context()
	c := r.newProject(t, "acme")
	c.deployPortal(t)
	c.createSession(t, &latchkeyv1.CreateAuthSessionRequest{AuthSessionId: "ok", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Credentials: map[string]string{"password": "old"}})
	r.sched.failWith(status.Error(codes.Unavailable, "scheduler down"))

	_, err := c.sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{
		AuthSessionId: "doomed", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS,
		Credentials: map[string]string{"password": "pw"}, Proxy: &latchkeyv1.Proxy{Server: "http://p:1", Username: "u", Password: "pp"},
	})
	regWantCode(t, err, codes.Unavailable)
	_, err = c.sessions.GetAuthSession(ctx, &latchkeyv1.GetAuthSessionRequest{AuthSessionId: "doomed"})
	regWantCode(t, err, codes.NotFound)
	for _, s := range []string{"session-doomed", "proxy-doomed"} {
		_, err = r.vault.GetSecret(ctx, &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: s, Reason: &vaultv1.AccessReason{Purpose: "test"}})
		regWantCode(t, err, codes.NotFound)
	}

	_, err = c.sessions.UpdateAuthSessionCredentials(ctx, &latchkeyv1.UpdateAuthSessionCredentialsRequest{AuthSessionId: "ok", Credentials: map[string]string{"password": "new"}})
	regWantCode(t, err, codes.Unavailable)
	_, err = r.vault.GetSecret(ctx, &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: "session-ok-pending", Reason: &vaultv1.AccessReason{Purpose: "test"}})
	regWantCode(t, err, codes.NotFound)

	// The scheduler's own refusals reach the user with their code.
	r.sched.failWith(status.Error(codes.FailedPrecondition, "no runner pool"))
	_, err = c.sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{AuthSessionId: "doomed", Type: latchkeyv1.SessionType_SESSION_TYPE_RUNTIME, Credentials: map[string]string{"p": "x"}})
	regWantCode(t, err, codes.FailedPrecondition)

	// Once the scheduler is back, the same requests work: nothing was left claimed.
	r.sched.failWith(nil)
	c.createSession(t, &latchkeyv1.CreateAuthSessionRequest{AuthSessionId: "doomed", Type: latchkeyv1.SessionType_SESSION_TYPE_RUNTIME, Credentials: map[string]string{"p": "x"}})
	if _, err := c.sessions.UpdateAuthSessionCredentials(ctx, &latchkeyv1.UpdateAuthSessionCredentialsRequest{AuthSessionId: "ok", Credentials: map[string]string{"password": "new"}}); err != nil {
		t.Fatal(err)
	}
	if len(r.sched.runs()) != 3 {
		t.Fatalf("%d runs started, want 3", len(r.sched.runs()))
	}
}
