package keyring_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/services/credential-vault/internal/keyring"
)

func b64(fill byte, n int) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{fill}, n))
}

func TestParseRoots(t *testing.T) {
	t.Parallel()
	k1, k2 := b64(1, 32), b64(2, 32)
	good := []struct {
		name string
		in   string
		want []uint32
	}{
		{"one", "v1:" + k1, []uint32{1}},
		{"two with spaces", " v1:" + k1 + " , v7: " + k2 + " ", []uint32{1, 7}},
		{"newlines, as in a key file", "v1:" + k1 + "\nv2:" + k2 + "\n", []uint32{1, 2}},
		{"unpadded url-safe", "v3:" + base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)), []uint32{3}},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := keyring.ParseRoots(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(r.Versions()); got != fmt.Sprint(tc.want) {
				t.Fatalf("versions = %s, want %v", got, tc.want)
			}
			back, err := keyring.ParseRoots(keyring.FormatRoots(r))
			if err != nil || fmt.Sprint(back.Versions()) != fmt.Sprint(tc.want) || back[tc.want[0]] != r[tc.want[0]] {
				t.Fatalf("FormatRoots does not round-trip: %v", err)
			}
		})
	}
	short := b64(9, 16)
	bad := []struct {
		name, in, want string
	}{
		{"empty", "", "no keys"},
		{"no version", short, `want "v<version>`},
		{"version zero", "v0:" + k1, "positive number"},
		{"not a number", "vx:" + k1, "positive number"},
		{"duplicate", "v1:" + k1 + ",v1:" + k2, "appears twice"},
		{"short key", "v1:" + short, "16 bytes, want 32"},
		{"not base64", "v1:!!" + short, "not valid base64"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := keyring.ParseRoots(tc.in)
			if !errors.Is(err, keyring.ErrInvalidRoots) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidRoots mentioning %q", err, tc.want)
			}
			if strings.Contains(err.Error(), short) || strings.Contains(err.Error(), k1) {
				t.Fatalf("the error quotes key material: %v", err)
			}
		})
	}
}

func TestKeysNeverPrintThemselves(t *testing.T) {
	t.Parallel()
	var k keyring.Key
	for i := range k {
		k[i] = 0xab
	}
	roots := keyring.Roots{1: k}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "key", k, "roots", roots)
	outputs := []string{
		fmt.Sprint(k), fmt.Sprintf("%x %X %v %+v %#v %s %d %q", k, k, k, k, k, k, k, k),
		fmt.Sprint(roots), fmt.Sprintf("%#v %v %+v", roots, roots, roots), logged.String(),
	}
	for _, out := range outputs {
		if strings.Contains(strings.ToLower(out), "abab") || strings.Contains(out, "171 171") || strings.Contains(out, b64(0xab, 32)[:8]) {
			t.Errorf("key material printed: %s", out)
		}
	}
}

func TestDerivedKeysAreDistinctAndStable(t *testing.T) {
	t.Parallel()
	var root, other keyring.Key
	root[0], other[0] = 1, 2
	id := []byte("ring-id-one")
	m1 := keyring.MasterKey(root, id, 1)
	if m1 != keyring.MasterKey(root, id, 1) {
		t.Fatal("master key derivation is not deterministic: replicas would disagree")
	}
	distinct := map[string]keyring.Key{
		"v1":            m1,
		"v2":            keyring.MasterKey(root, id, 2),
		"other ring":    keyring.MasterKey(root, []byte("ring-id-two"), 1),
		"other root":    keyring.MasterKey(other, id, 1),
		"project a":     keyring.ProjectKey(m1, []byte("material"), "a"),
		"project b":     keyring.ProjectKey(m1, []byte("material"), "b"),
		"new material":  keyring.ProjectKey(m1, []byte("material2"), "a"),
		"other version": keyring.ProjectKey(keyring.MasterKey(root, id, 2), []byte("material"), "a"),
	}
	seen := map[keyring.Key]string{}
	for name, k := range distinct {
		if prev, dup := seen[k]; dup {
			t.Errorf("%s and %s derive the same key", name, prev)
		}
		seen[k] = name
	}
	if keyring.KeyCheck(root) == keyring.KeyCheck(other) || keyring.KeyCheck(root) != keyring.KeyCheck(root) {
		t.Error("KeyCheck does not tell keys apart")
	}
}
