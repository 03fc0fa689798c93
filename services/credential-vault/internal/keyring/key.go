// Package keyring holds the vault's keys: the root keys an operator configures
// (LATCHKEY_VAULT_KEYS), the versioned master keys derived from them, and the ring
// state every replica shares in JetStream KV (current version, minimum decryption
// version, the versions that exist). Keys never print themselves.
package keyring

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
)

// KeySize is the size of every key here: AES-256.
const KeySize = 32

// redacted replaces a key wherever it would be printed.
const redacted = "[REDACTED]"

// Key is a 256-bit key. It redacts itself in fmt verbs, slog and %#v.
type Key [KeySize]byte

// String implements fmt.Stringer without the key.
func (Key) String() string { return redacted }

// GoString keeps %#v from printing the key.
func (Key) GoString() string { return redacted }

// Format keeps every fmt verb (%x, %v, %s, %d...) from printing the key.
func (Key) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue implements slog.LogValuer without the key.
func (Key) LogValue() slog.Value { return slog.StringValue(redacted) }

// ErrInvalidRoots is returned for a root key ring that cannot be parsed.
var ErrInvalidRoots = errors.New("invalid vault root keys")

// Roots are the configured root keys by version. They redact themselves.
type Roots map[uint32]Key

// String implements fmt.Stringer, naming the versions only.
func (r Roots) String() string { return "root keys " + fmt.Sprint(r.Versions()) }

// GoString keeps %#v from printing the keys.
func (r Roots) GoString() string { return r.String() }

// Format keeps every fmt verb from printing the keys.
func (r Roots) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(r.String())) }

// LogValue implements slog.LogValuer, naming the versions only.
func (r Roots) LogValue() slog.Value { return slog.StringValue(r.String()) }

// Versions lists the configured root versions, ascending.
func (r Roots) Versions() []uint32 {
	vs := make([]uint32, 0, len(r))
	for v := range r {
		vs = append(vs, v)
	}
	slices.Sort(vs)
	return vs
}

// Newest is the highest configured root version.
func (r Roots) Newest() uint32 {
	vs := r.Versions()
	if len(vs) == 0 {
		return 0
	}
	return vs[len(vs)-1]
}

// ParseRoots parses "v1:base64key,v2:base64key" (entries separated by commas or
// newlines; each key 32 bytes in standard or URL-safe base64, padded or not). Its
// errors name the entry and never quote key material.
func ParseRoots(s string) (Roots, error) {
	entries := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' })
	roots := make(Roots)
	for i, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		v, k, err := parseRoot(e)
		if err != nil {
			return nil, fmt.Errorf("%w: entry %d: %w", ErrInvalidRoots, i+1, err)
		}
		if _, dup := roots[v]; dup {
			return nil, fmt.Errorf("%w: version v%d appears twice", ErrInvalidRoots, v)
		}
		roots[v] = k
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("%w: no keys; the format is \"v1:<32 bytes in base64>\"", ErrInvalidRoots)
	}
	return roots, nil
}

func parseRoot(e string) (uint32, Key, error) {
	name, b64, ok := strings.Cut(e, ":")
	if !ok || !strings.HasPrefix(name, "v") {
		return 0, Key{}, errors.New(`want "v<version>:<base64 key>"`)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(name[1:]), 10, 32)
	if err != nil || n == 0 {
		return 0, Key{}, errors.New("the version must be a positive number, as in v1")
	}
	raw, err := decodeBase64(strings.TrimSpace(b64))
	if err != nil {
		return 0, Key{}, fmt.Errorf("v%d: the key is not valid base64", n)
	}
	defer clear(raw)
	if len(raw) != KeySize {
		return 0, Key{}, fmt.Errorf("v%d: the key is %d bytes, want %d (generate one with `openssl rand -base64 32`)", n, len(raw), KeySize)
	}
	var k Key
	copy(k[:], raw)
	return uint32(n), k, nil
}

func decodeBase64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// FormatRoots encodes roots in the form ParseRoots reads. It is the only function
// that renders key material, for writing a generated key file.
func FormatRoots(r Roots) string {
	parts := make([]string, 0, len(r))
	for _, v := range r.Versions() {
		k := r[v]
		parts = append(parts, "v"+strconv.FormatUint(uint64(v), 10)+":"+base64.StdEncoding.EncodeToString(k[:]))
	}
	return strings.Join(parts, ",")
}

// derive expands secret into a key with HKDF-SHA256.
func derive(secret, salt []byte, info string) Key {
	out, err := hkdf.Key(sha256.New, secret, salt, info, KeySize)
	if err != nil {
		// hkdf.Key fails only for lengths above 255*32 bytes.
		panic("keyring: hkdf: " + err.Error())
	}
	var k Key
	copy(k[:], out)
	clear(out)
	return k
}

// MasterKey derives master key version v from its root key and the ring's id (a
// random salt fixed when the ring was created, so two deployments sharing a root key
// still have different master keys).
func MasterKey(root Key, ringID []byte, v uint32) Key {
	return derive(root[:], ringID, "latchkey vault master key v"+strconv.FormatUint(uint64(v), 10))
}

// ProjectKey derives a project's key under one master key version from the project's
// random material (stored in KV and destroyed when the project is shredded).
func ProjectKey(master Key, material []byte, project string) Key {
	return derive(master[:], material, "latchkey vault project key\x00"+project)
}

// KeyCheck is a public fingerprint of a root key, recorded in the ring so a replica
// configured with a different key for the same version refuses to start instead of
// failing every decrypt. It reveals nothing about the key.
func KeyCheck(root Key) string {
	k := derive(root[:], nil, "latchkey vault root key check")
	return base64.RawStdEncoding.EncodeToString(k[:12])
}
