package api_test

import (
	"bytes"
	"crypto/rand"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/services/credential-vault/internal/api"
)

func TestEncryptDecryptRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, size := range []int{0, 1, 50 << 10, api.MaxPlaintextBytes} {
		pt := make([]byte, size)
		_, _ = rand.Read(pt)
		c := cctx("acme", "storage_state", "sess-1")
		r := e.encrypt(t, c, pt)
		if r.GetKeyVersion() != 1 {
			t.Fatalf("size %d: key version %d, want 1", size, r.GetKeyVersion())
		}
		if size > 16 && bytes.Contains(r.GetCiphertext(), pt[:16]) {
			t.Fatalf("size %d: the ciphertext holds the plaintext", size)
		}
		got, err := e.decrypt(t, c, r.GetCiphertext())
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("size %d: Decrypt = %d bytes, %v", size, len(got), err)
		}
	}
}

func TestCiphertextDoesNotMove(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sealed := cctx("acme", "storage_state", "sess-1")
	ct := e.encrypt(t, sealed, []byte(`{"cookies":[{"name":"sid","value":"s3cr3t"}]}`)).GetCiphertext()
	e.encrypt(t, cctx("globex", "storage_state", "sess-1"), []byte("globex has keys too"))
	cases := map[string]*vaultv1.CryptoContext{
		"another session":      cctx("acme", "storage_state", "sess-2"),
		"another project":      cctx("globex", "storage_state", "sess-1"),
		"another kind":         cctx("acme", "runtime_credentials", "sess-1"),
		"another kind and id":  cctx("acme", "runtime_credentials", "run-1"),
		"project without keys": cctx("initech", "storage_state", "sess-1"),
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pt, err := e.decrypt(t, c, ct)
			if err == nil || pt != nil {
				t.Fatal("decrypted in another context")
			}
			if name == "project without keys" {
				wantCode(t, err, codes.FailedPrecondition)
				return
			}
			// The same answer as tampering: a caller learns nothing about why.
			wantCode(t, err, codes.InvalidArgument)
			if got := status.Convert(err).Message(); got != tamperedMessage(t, e) {
				t.Fatalf("message %q differs from the tampering one", got)
			}
		})
	}
}

// tamperedMessage is what Decrypt says of a ciphertext with one flipped byte.
func tamperedMessage(t *testing.T, e *env) string {
	t.Helper()
	c := cctx("acme", "storage_state", "tamper")
	ct := e.encrypt(t, c, []byte("x")).GetCiphertext()
	ct[len(ct)-1] ^= 1
	_, err := e.decrypt(t, c, ct)
	return status.Convert(err).Message()
}

func TestTamperingWithAnyByteFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := cctx("acme", "runtime_credentials", "run-42")
	ct := e.encrypt(t, c, []byte(`{"password":"hunter2"}`)).GetCiphertext()
	// Make a version 2 exist, so a flipped version byte can name a real version.
	if _, err := e.RotateKey(t.Context(), &vaultv1.RotateKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	for i := range ct {
		for _, flip := range []byte{0x01, 0x03, 0x80} {
			bad := bytes.Clone(ct)
			bad[i] ^= flip
			pt, err := e.decrypt(t, c, bad)
			if err == nil || pt != nil {
				t.Fatalf("byte %d ^ %#x decrypted", i, flip)
			}
			code := status.Code(err)
			// Bytes 4-7 name the key version: an unknown one is FailedPrecondition.
			if code != codes.InvalidArgument && !(i >= 4 && i < 8 && code == codes.FailedPrecondition) {
				t.Fatalf("byte %d ^ %#x: %v", i, flip, err)
			}
		}
	}
}
