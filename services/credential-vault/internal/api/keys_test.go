package api_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/testkit"
)

func (e *env) rotate(t testing.TB) uint32 {
	t.Helper()
	r, err := e.RotateKey(t.Context(), &vaultv1.RotateKeyRequest{})
	if err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	return r.GetNewVersion()
}

func (e *env) rewrapAll(t testing.TB) int64 {
	t.Helper()
	r, err := e.Rewrap(t.Context(), &vaultv1.RewrapRequest{})
	if err != nil {
		t.Fatalf("Rewrap: %v", err)
	}
	return r.GetRewrapped()
}

func (e *env) status(t testing.TB) *vaultv1.KeyStatusResponse {
	t.Helper()
	r, err := e.KeyStatus(t.Context(), &vaultv1.KeyStatusRequest{})
	if err != nil {
		t.Fatalf("KeyStatus: %v", err)
	}
	return r
}

func TestRotationRewrapAndMinimumVersion(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	for i := range 3 {
		e.put(t, "acme", fmt.Sprintf("s%d", i), map[string]string{"password": fmt.Sprint("pw", i)})
	}
	blob := cctx("acme", "storage_state", "sess-1")
	old := e.encrypt(t, blob, []byte("state v1")).GetCiphertext()

	if v := e.rotate(t); v != 2 {
		t.Fatalf("RotateKey = %d, want 2", v)
	}
	if r := e.encrypt(t, blob, []byte("state v2")); r.GetKeyVersion() != 2 {
		t.Fatalf("Encrypt after rotation uses version %d, want 2", r.GetKeyVersion())
	}
	e.put(t, "acme", "new", map[string]string{"password": "new"})
	if got, err := e.decrypt(t, blob, old); err != nil || string(got) != "state v1" {
		t.Fatalf("version 1 blob after rotation: %q, %v", got, err)
	}
	want := &vaultv1.KeyStatusResponse{CurrentVersion: 2, MinDecryptionVersion: 1, Versions: []uint32{1, 2}, WrappedByVersion: map[uint32]int64{1: 3, 2: 1}}
	if diff := cmp.Diff(want, e.status(t), protocmp.Transform()); diff != "" {
		t.Fatalf("KeyStatus (-want +got):\n%s", diff)
	}

	// Raising the minimum while stored secrets still need version 1 is refused.
	_, err := e.SetMinDecryptionVersion(ctx, &vaultv1.SetMinDecryptionVersionRequest{MinDecryptionVersion: 2})
	wantCode(t, err, codes.FailedPrecondition)
	if !strings.Contains(status.Convert(err).Message(), "3 stored secrets") {
		t.Errorf("refusal does not say why: %v", err)
	}

	if n := e.rewrapAll(t); n != 3 {
		t.Fatalf("Rewrap rewrapped %d, want 3", n)
	}
	if n := e.rewrapAll(t); n != 0 {
		t.Fatalf("a second Rewrap rewrapped %d, want 0", n)
	}
	r, err := e.Rewrap(ctx, &vaultv1.RewrapRequest{Context: blob, Ciphertext: old})
	if err != nil {
		t.Fatal(err)
	}
	rewrapped := r.GetCiphertext()
	if _, err := e.SetMinDecryptionVersion(ctx, &vaultv1.SetMinDecryptionVersionRequest{MinDecryptionVersion: 2}); err != nil {
		t.Fatal(err)
	}

	for i := range 3 {
		if got, err := e.get(t, "acme", fmt.Sprintf("s%d", i)); err != nil || got["password"] != fmt.Sprint("pw", i) {
			t.Fatalf("secret s%d after rewrap: %v", i, err)
		}
	}
	if got, err := e.decrypt(t, blob, rewrapped); err != nil || string(got) != "state v1" {
		t.Fatalf("rewrapped blob: %q, %v", got, err)
	}
	_, err = e.decrypt(t, blob, old)
	wantCode(t, err, codes.FailedPrecondition)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "below the minimum decryption version 2") {
		t.Errorf("message does not explain: %q", msg)
	}
	_, err = e.Rewrap(ctx, &vaultv1.RewrapRequest{Context: blob, Ciphertext: old})
	wantCode(t, err, codes.FailedPrecondition)
	want = &vaultv1.KeyStatusResponse{CurrentVersion: 2, MinDecryptionVersion: 2, Versions: []uint32{1, 2}, WrappedByVersion: map[uint32]int64{2: 4}}
	if diff := cmp.Diff(want, e.status(t), protocmp.Transform()); diff != "" {
		t.Fatalf("KeyStatus (-want +got):\n%s", diff)
	}
}

// TestRotationUnderConcurrentTraffic rotates and rewraps while workers keep storing,
// reading, encrypting and decrypting: nothing fails, and afterwards everything is
// readable with the minimum raised to the last version.
func TestRotationUnderConcurrentTraffic(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const workers = 4
	var stop atomic.Bool
	var ops atomic.Int64
	var done [workers]atomic.Int64 // round trips per worker
	var mu sync.Mutex
	blobs := map[string][]byte{} // context id → latest ciphertext
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				id := fmt.Sprintf("w%d-%d", w, i%5)
				ct, err := e.roundTrip(t, id, fmt.Sprintf("value %d of worker %d", i, w))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				blobs[id] = ct
				mu.Unlock()
				ops.Add(1)
				done[w].Add(1)
			}
		})
	}
	stopWorkers := func() { stop.Store(true); wg.Wait() }
	defer stopWorkers() // also when a poll below fails the test
	// Each rotation waits until every worker has made a full turn of its five secrets
	// since the last one, so every rotation and rewrap meets traffic in flight (and
	// every secret exists for the count at the end).
	var since [workers]int64
	for range 3 {
		testkit.Eventually(t, 30*time.Second, func() (bool, string) {
			for w := range workers {
				if n := done[w].Load(); n < since[w]+5 && !t.Failed() {
					return false, fmt.Sprintf("worker %d made %d round trips since the last rotation, want 5", w, n-since[w])
				}
			}
			return true, ""
		})
		for w := range workers {
			since[w] = done[w].Load()
		}
		e.rotate(t)
		e.rewrapAll(t)
	}
	stopWorkers()
	if t.Failed() {
		return
	}
	t.Logf("%d rounds of traffic during 3 rotations", ops.Load())

	// A secret a worker wrote between the last rotation and its rewrap may still be
	// on an older version: one more rewrap takes it, and the blobs are rewrapped by
	// their holder, before the minimum goes up.
	e.rewrapAll(t)
	for id, ct := range blobs {
		r, err := e.Rewrap(t.Context(), &vaultv1.RewrapRequest{Context: cctx("acme", "storage_state", id), Ciphertext: ct})
		if err != nil {
			t.Fatalf("Rewrap(%s): %v", id, err)
		}
		blobs[id] = r.GetCiphertext()
	}
	if _, err := e.SetMinDecryptionVersion(t.Context(), &vaultv1.SetMinDecryptionVersionRequest{MinDecryptionVersion: 4}); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t); len(st.GetWrappedByVersion()) != 1 || st.GetWrappedByVersion()[4] != workers*5 {
		t.Fatalf("after the last rewrap: %v, want all %d secrets on version 4", st.GetWrappedByVersion(), workers*5)
	}
	for id, ct := range blobs {
		if _, err := e.decrypt(t, cctx("acme", "storage_state", id), ct); err != nil {
			t.Fatalf("Decrypt(%s) after rewrap: %v", id, err)
		}
		if _, err := e.get(t, "acme", id); err != nil {
			t.Fatalf("GetSecret(%s) after rewrap: %v", id, err)
		}
	}
}

// roundTrip stores, reads, encrypts and decrypts want under id, returning the
// ciphertext; it reports errors instead of failing, for use in goroutines.
func (e *env) roundTrip(t *testing.T, id, want string) ([]byte, error) {
	ctx := caller(t.Context(), "test")
	if _, err := e.PutSecret(ctx, &vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: id, Fields: map[string]string{"password": want}, Overwrite: true}); err != nil {
		return nil, fmt.Errorf("PutSecret(%s): %w", id, err)
	}
	if got, err := e.GetSecret(ctx, &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: id}); err != nil || got.GetFields()["password"] != want {
		return nil, fmt.Errorf("GetSecret(%s) = %v, %v; want %q", id, got.GetFields(), err, want)
	}
	c := cctx("acme", "storage_state", id)
	r, err := e.Encrypt(ctx, &vaultv1.EncryptRequest{Context: c, Plaintext: []byte(want)})
	if err != nil {
		return nil, fmt.Errorf("Encrypt(%s): %w", id, err)
	}
	if got, err := e.Decrypt(ctx, &vaultv1.DecryptRequest{Context: c, Ciphertext: r.GetCiphertext()}); err != nil || string(got.GetPlaintext()) != want {
		return nil, fmt.Errorf("Decrypt(%s) = %q, %v; want %q", id, got.GetPlaintext(), err, want)
	}
	return r.GetCiphertext(), nil
}

func TestShredProject(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	e.put(t, "acme", "login", map[string]string{"password": "a"})
	e.put(t, "globex", "login", map[string]string{"password": "g"})
	acmeBlob, globexBlob := cctx("acme", "storage_state", "s1"), cctx("globex", "storage_state", "s1")
	acmeCT := e.encrypt(t, acmeBlob, []byte("acme state")).GetCiphertext()
	globexCT := e.encrypt(t, globexBlob, []byte("globex state")).GetCiphertext()
	// A backup of the stored secret taken before the project is deleted.
	backup, err := e.kv.Get(ctx, "secret.acme.login")
	if err != nil {
		t.Fatal(err)
	}

	for range 2 { // idempotent
		if _, err := e.ShredProject(ctx, &vaultv1.ShredProjectRequest{ProjectId: "acme"}); err != nil {
			t.Fatal(err)
		}
	}

	_, err = e.get(t, "acme", "login")
	wantCode(t, err, codes.NotFound)
	_, err = e.decrypt(t, acmeBlob, acmeCT)
	wantCode(t, err, codes.FailedPrecondition)
	if _, err := e.kv.Get(ctx, "project.acme"); err == nil {
		t.Fatal("the project's key material survived")
	}
	// Restoring the backup brings nothing back: its key is gone.
	if _, err := e.kv.Put(ctx, "secret.acme.login", backup.Value()); err != nil {
		t.Fatal(err)
	}
	_, err = e.get(t, "acme", "login")
	wantCode(t, err, codes.FailedPrecondition)
	// A project created again with the same id gets new keys; old ciphertexts stay dead.
	e.encrypt(t, acmeBlob, []byte("new acme"))
	_, err = e.decrypt(t, acmeBlob, acmeCT)
	wantCode(t, err, codes.InvalidArgument)
	_, err = e.get(t, "acme", "login")
	wantCode(t, err, codes.InvalidArgument)

	// Other projects are untouched.
	if got, err := e.get(t, "globex", "login"); err != nil || got["password"] != "g" {
		t.Fatalf("globex secret: %v", err)
	}
	if got, err := e.decrypt(t, globexBlob, globexCT); err != nil || string(got) != "globex state" {
		t.Fatalf("globex blob: %v", err)
	}
}
