package keyring_test

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/logging"
	"github.com/latchkey/latchkey/libs/testkit"
	"github.com/latchkey/latchkey/services/credential-vault/internal/keyring"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testkit.LibraryGoroutines()...) }

func secretsKV(t *testing.T) jetstream.KeyValue {
	t.Helper()
	_, _, js := testkit.NATS(t)
	kv, err := js.KeyValue(t.Context(), bus.BucketSecrets)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func roots(t *testing.T, versions ...uint32) keyring.Roots {
	t.Helper()
	r := keyring.Roots{}
	for _, v := range versions {
		var k keyring.Key
		k[0], k[1] = byte(v), 0x5a
		r[v] = k
	}
	return r
}

func open(t *testing.T, kv jetstream.KeyValue, r keyring.Roots) (*keyring.Keeper, error) {
	t.Helper()
	k, err := keyring.Open(t.Context(), kv, keyring.Options{Roots: r, Rand: rand.Reader, Now: time.Now, Logger: logging.Discard()})
	if err == nil {
		t.Cleanup(k.Close)
	}
	return k, err
}

func mustOpen(t *testing.T, kv jetstream.KeyValue, r keyring.Roots) *keyring.Keeper {
	t.Helper()
	k, err := open(t, kv, r)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestReplicasShareOneRing(t *testing.T) {
	t.Parallel()
	kv := secretsKV(t)
	r := roots(t, 1)
	// Replicas starting together create the ring once and agree on it.
	keepers := make([]*keyring.Keeper, 4)
	var wg sync.WaitGroup
	errs := make([]error, len(keepers))
	for i := range keepers {
		wg.Go(func() { keepers[i], errs[i] = open(t, kv, r) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	v0, m0, err := keepers[0].Current()
	if err != nil || v0 != 1 {
		t.Fatalf("Current = %d, %v", v0, err)
	}
	for i, k := range keepers[1:] {
		v, m, err := k.Current()
		if err != nil || v != v0 || m != m0 {
			t.Fatalf("replica %d derives another current key (version %d, %v)", i+1, v, err)
		}
	}

	// A rotation on one replica reaches the others, with the same derived key.
	nv, err := keepers[0].Rotate(t.Context())
	if err != nil || nv != 2 {
		t.Fatalf("Rotate = %d, %v", nv, err)
	}
	_, want, _ := keepers[0].Current()
	for i, k := range keepers[1:] {
		waitFor(t, func() bool { v, _, _ := k.Current(); return v == 2 })
		if _, got, _ := k.Current(); got != want {
			t.Fatalf("replica %d derived another key for version 2", i+1)
		}
	}

	// A restarted replica finds the ring as it was left.
	keepers[0].Close()
	again := mustOpen(t, kv, r)
	if st := again.State(); st.Current != 2 || len(st.Versions) != 2 {
		t.Fatalf("after restart: current %d, versions %v", st.Current, st.Numbers())
	}
}

func TestConcurrentRotationsAllLand(t *testing.T) {
	t.Parallel()
	kv := secretsKV(t)
	a, b := mustOpen(t, kv, roots(t, 1)), mustOpen(t, kv, roots(t, 1))
	var wg sync.WaitGroup
	for i := range 6 {
		k := a
		if i%2 == 1 {
			k = b
		}
		wg.Go(func() {
			if _, err := k.Rotate(t.Context()); err != nil {
				t.Errorf("Rotate: %v", err)
			}
		})
	}
	wg.Wait()
	waitFor(t, func() bool { return a.State().Current == 7 && b.State().Current == 7 })
	if got := a.State().Numbers(); len(got) != 7 {
		t.Fatalf("versions = %v, want 1..7", got)
	}
}

func TestDecryptionVersionRules(t *testing.T) {
	t.Parallel()
	kv := secretsKV(t)
	k := mustOpen(t, kv, roots(t, 1))
	for range 2 {
		if _, err := k.Rotate(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.SetMinimum(t.Context(), 2); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		v    uint32
		want error
	}{
		{1, keyring.ErrBelowMinimum},
		{2, nil},
		{3, nil},
		{4, keyring.ErrUnknownVersion},
		{0, keyring.ErrUnknownVersion},
	}
	for _, tc := range cases {
		if _, err := k.ForDecrypt(tc.v); !errors.Is(err, tc.want) {
			t.Errorf("ForDecrypt(%d) = %v, want %v", tc.v, err, tc.want)
		}
	}
	for _, bad := range []uint32{0, 4} {
		if err := k.SetMinimum(t.Context(), bad); !errors.Is(err, keyring.ErrInvalidMinimum) {
			t.Errorf("SetMinimum(%d) = %v, want ErrInvalidMinimum", bad, err)
		}
	}
	// Lowering the minimum again is allowed, as in Vault's transit engine.
	if err := k.SetMinimum(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := k.ForDecrypt(1); err != nil {
		t.Errorf("ForDecrypt(1) after lowering the minimum: %v", err)
	}
}

func TestOpenChecksTheConfiguredRoots(t *testing.T) {
	t.Parallel()
	kv := secretsKV(t)
	mustOpen(t, kv, roots(t, 1))

	other := roots(t, 1)
	other[1] = keyring.Key{0xee}
	if _, err := open(t, kv, other); !errors.Is(err, keyring.ErrRootMismatch) {
		t.Fatalf("a different key for v1: %v, want ErrRootMismatch", err)
	}

	// Root rotation: add v2, rotate (the new version derives from v2), then a replica
	// without v2 cannot start, and one without v1 cannot decrypt version 1.
	both := mustOpen(t, kv, roots(t, 1, 2))
	if _, err := both.Rotate(t.Context()); err != nil {
		t.Fatal(err)
	}
	if v, _ := both.State().Find(2); v.Root != 2 {
		t.Fatalf("version 2 derives from root v%d, want v2", v.Root)
	}
	if _, err := open(t, kv, roots(t, 1)); !errors.Is(err, keyring.ErrRootMissing) {
		t.Fatalf("without root v2: %v, want ErrRootMissing", err)
	}
	only2 := mustOpen(t, kv, roots(t, 2))
	if _, err := only2.ForDecrypt(1); !errors.Is(err, keyring.ErrRootMissing) {
		t.Fatalf("ForDecrypt(1) without root v1: %v, want ErrRootMissing", err)
	}
	if _, err := only2.ForDecrypt(2); err != nil {
		t.Fatalf("ForDecrypt(2): %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met in 5s")
		case <-time.After(5 * time.Millisecond):
		}
	}
}
