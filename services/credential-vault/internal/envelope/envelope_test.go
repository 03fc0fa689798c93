package envelope_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/latchkey/latchkey/services/credential-vault/internal/envelope"
	"github.com/latchkey/latchkey/services/credential-vault/internal/keyring"
)

func key(t testing.TB) keyring.Key {
	t.Helper()
	var k keyring.Key
	if _, err := rand.Read(k[:]); err != nil {
		t.Fatal(err)
	}
	return k
}

var ctxA = envelope.Context{Project: "acme", Kind: "storage_state", ID: "sess-1"}

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	kek := key(t)
	for _, size := range []int{0, 1, 50 << 10, 3 << 20} {
		pt := make([]byte, size)
		_, _ = rand.Read(pt)
		ct, err := envelope.Seal(rand.Reader, kek, 7, ctxA, pt)
		if err != nil {
			t.Fatalf("size %d: Seal: %v", size, err)
		}
		if len(ct) != size+envelope.Overhead {
			t.Errorf("size %d: ciphertext is %d bytes, want %d", size, len(ct), size+envelope.Overhead)
		}
		if v, err := envelope.KeyVersion(ct); err != nil || v != 7 {
			t.Errorf("size %d: KeyVersion = %d, %v; want 7", size, v, err)
		}
		got, err := envelope.Open(kek, ctxA, ct)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("size %d: Open = %d bytes, %v; want the plaintext back", size, len(got), err)
		}
	}
}

func TestSealUsesAFreshDataKeyEachTime(t *testing.T) {
	t.Parallel()
	kek := key(t)
	a, _ := envelope.Seal(rand.Reader, kek, 1, ctxA, []byte("same"))
	b, _ := envelope.Seal(rand.Reader, kek, 1, ctxA, []byte("same"))
	if bytes.Equal(a[8:], b[8:]) {
		t.Fatal("two seals of the same value are identical")
	}
}

func TestOpenRefusesAnotherContext(t *testing.T) {
	t.Parallel()
	kek := key(t)
	ct, err := envelope.Seal(rand.Reader, kek, 1, ctxA, []byte("cookie"))
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]envelope.Context{
		"other project":   {Project: "evil", Kind: ctxA.Kind, ID: ctxA.ID},
		"other kind":      {Project: ctxA.Project, Kind: "runtime_credentials", ID: ctxA.ID},
		"other id":        {Project: ctxA.Project, Kind: ctxA.Kind, ID: "sess-2"},
		"shifted parts":   {Project: ctxA.Project + "s", Kind: "torage_state", ID: ctxA.ID},
		"empty context":   {},
		"same, other kek": ctxA,
	} {
		t.Run(name, func(t *testing.T) {
			k := kek
			if name == "same, other kek" {
				k = key(t)
			}
			pt, err := envelope.Open(k, c, ct)
			if !errors.Is(err, envelope.ErrUnauthentic) || pt != nil {
				t.Fatalf("Open = %q, %v; want ErrUnauthentic", pt, err)
			}
		})
	}
}

func TestOpenRefusesEveryTamperedByte(t *testing.T) {
	t.Parallel()
	kek := key(t)
	ct, err := envelope.Seal(rand.Reader, kek, 3, ctxA, []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range ct {
		for _, flip := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(ct)
			bad[i] ^= flip
			pt, err := envelope.Open(kek, ctxA, bad)
			if err == nil || pt != nil {
				t.Fatalf("byte %d ^ %#x: Open succeeded", i, flip)
			}
			want := envelope.ErrUnauthentic
			switch {
			case i < 3:
				want = envelope.ErrMalformed
			case i == 3:
				want = envelope.ErrUnsupportedFormat
			}
			if !errors.Is(err, want) {
				t.Fatalf("byte %d ^ %#x: %v, want %v", i, flip, err, want)
			}
		}
	}
	for _, n := range []int{0, 1, envelope.Overhead - 1} {
		if _, err := envelope.Open(kek, ctxA, ct[:n]); !errors.Is(err, envelope.ErrMalformed) {
			t.Errorf("truncated to %d bytes: %v, want ErrMalformed", n, err)
		}
	}
}

func TestRewrapMovesTheDataKeyOnly(t *testing.T) {
	t.Parallel()
	oldKEK, newKEK := key(t), key(t)
	ct, err := envelope.Seal(rand.Reader, oldKEK, 1, ctxA, []byte("state"))
	if err != nil {
		t.Fatal(err)
	}
	re, err := envelope.Rewrap(rand.Reader, oldKEK, newKEK, 2, ctxA, ct)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := envelope.KeyVersion(re); v != 2 {
		t.Errorf("rewrapped version = %d, want 2", v)
	}
	body := 8 + 12 + 32 + 16
	if !bytes.Equal(re[body:], ct[body:]) {
		t.Error("rewrap changed the sealed value")
	}
	if pt, err := envelope.Open(newKEK, ctxA, re); err != nil || string(pt) != "state" {
		t.Errorf("Open(rewrapped) = %q, %v", pt, err)
	}
	if _, err := envelope.Open(oldKEK, ctxA, re); !errors.Is(err, envelope.ErrUnauthentic) {
		t.Errorf("old key still opens the rewrapped ciphertext: %v", err)
	}
	if _, err := envelope.Rewrap(rand.Reader, oldKEK, newKEK, 2, envelope.Context{Project: "evil", Kind: ctxA.Kind, ID: ctxA.ID}, ct); !errors.Is(err, envelope.ErrUnauthentic) {
		t.Errorf("rewrap for another context: %v, want ErrUnauthentic", err)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("entropy exhausted") }

func TestSealFailsWithoutRandomness(t *testing.T) {
	t.Parallel()
	if ct, err := envelope.Seal(failingReader{}, key(t), 1, ctxA, []byte("x")); err == nil || ct != nil {
		t.Fatalf("Seal with a failing random source = %d bytes, %v", len(ct), err)
	}
}

// BenchmarkSeal50KB seals a 50 KB storage state (crypto only, no storage).
func BenchmarkSeal50KB(b *testing.B) {
	kek := key(b)
	pt := make([]byte, 50<<10)
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		if _, err := envelope.Seal(rand.Reader, kek, 1, ctxA, pt); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpen50KB opens a 50 KB storage state (crypto only, no storage).
func BenchmarkOpen50KB(b *testing.B) {
	kek := key(b)
	ct, err := envelope.Seal(rand.Reader, kek, 1, ctxA, make([]byte, 50<<10))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(50 << 10)
	for b.Loop() {
		if _, err := envelope.Open(kek, ctxA, ct); err != nil {
			b.Fatal(err)
		}
	}
}
