package api_test

import (
	"crypto/rand"
	"testing"

	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
)

// state50KB is the size of a large logged-in storage state.
const state50KB = 50 << 10

// BenchmarkEncrypt50KB is Encrypt in-process: project key material from JetStream KV,
// key derivation, and sealing a 50 KB state.
func BenchmarkEncrypt50KB(b *testing.B) {
	e := newEnv(b)
	c := cctx("acme", "storage_state", "sess-1")
	pt := make([]byte, state50KB)
	_, _ = rand.Read(pt)
	req := &vaultv1.EncryptRequest{Context: c, Plaintext: pt}
	b.SetBytes(state50KB)
	for b.Loop() {
		if _, err := e.Encrypt(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecrypt50KB is Decrypt in-process: key material from KV, opening a 50 KB
// state, and publishing its audit event to LK_AUDIT (acknowledged by JetStream).
func BenchmarkDecrypt50KB(b *testing.B) {
	e := newEnv(b)
	c := cctx("acme", "storage_state", "sess-1")
	pt := make([]byte, state50KB)
	_, _ = rand.Read(pt)
	req := &vaultv1.DecryptRequest{Context: c, Ciphertext: e.encrypt(b, c, pt).GetCiphertext(), Reason: &vaultv1.AccessReason{Purpose: "bench"}}
	ctx := caller(b.Context(), "bench")
	b.SetBytes(state50KB)
	for b.Loop() {
		if _, err := e.Decrypt(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
