// Package envelope is the vault's ciphertext format: a fresh random AES-256-GCM data
// key per sealed value, wrapped by a project key of one master key version, with the
// value's context (project, kind, id) bound in as additional authenticated data.
//
// Layout (all integers big-endian):
//
//	"LKV" | format (1) | master key version (4)           header, 8 bytes
//	wrap nonce (12) | wrapped data key (32) + tag (16)    the data key, sealed by the project key
//	data nonce (12) | ciphertext + tag (16)               the value, sealed by the data key
//
// The wrap's AAD is the header and the context; the value's AAD is the format and the
// context, not the key version, so Rewrap re-wraps the data key under a newer version
// without touching (or ever seeing) the value.
package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/latchkey/latchkey/services/credential-vault/internal/keyring"
)

// Format is the only ciphertext format this package writes and reads.
const Format byte = 1

const (
	magic      = "LKV"
	headerSize = len(magic) + 1 + 4
	nonceSize  = 12
	tagSize    = 16
	wrapSize   = nonceSize + keyring.KeySize + tagSize
	// Overhead is how many bytes Seal adds to a value.
	Overhead = headerSize + wrapSize + nonceSize + tagSize
)

var (
	// ErrMalformed is input that is not a vault ciphertext at all: too short, or
	// without the "LKV" header.
	ErrMalformed = errors.New("not a vault ciphertext")
	// ErrUnsupportedFormat is a vault ciphertext in a format this vault cannot read.
	ErrUnsupportedFormat = errors.New("unsupported vault ciphertext format")
	// ErrUnauthentic is a ciphertext that does not open: altered, or sealed for
	// another context. The two are deliberately indistinguishable.
	ErrUnauthentic = errors.New("ciphertext does not decrypt for this context")
)

// Context is what a ciphertext is bound to.
type Context struct {
	Project, Kind, ID string
}

// KeyVersion returns the master key version ct names, after checking that ct looks
// like a vault ciphertext.
func KeyVersion(ct []byte) (uint32, error) {
	if len(ct) < Overhead || string(ct[:len(magic)]) != magic {
		return 0, ErrMalformed
	}
	if ct[len(magic)] != Format {
		return 0, fmt.Errorf("%w %d (this vault reads format %d)", ErrUnsupportedFormat, ct[len(magic)], Format)
	}
	return binary.BigEndian.Uint32(ct[len(magic)+1 : headerSize]), nil
}

// Seal encrypts plaintext for c with a fresh data key from random, wrapped by kek (the
// project key of master key version). random must be a cryptographic source.
func Seal(random io.Reader, kek keyring.Key, version uint32, c Context, plaintext []byte) ([]byte, error) {
	var dk keyring.Key
	defer clear(dk[:])
	if _, err := io.ReadFull(random, dk[:]); err != nil {
		return nil, fmt.Errorf("generating a data key: %w", err)
	}
	out := make([]byte, headerSize, Overhead+len(plaintext))
	copy(out, magic)
	out[len(magic)] = Format
	binary.BigEndian.PutUint32(out[len(magic)+1:], version)

	out, err := seal(random, kek, out, dk[:], wrapAAD(out[:headerSize], c))
	if err != nil {
		return nil, fmt.Errorf("wrapping the data key: %w", err)
	}
	out, err = seal(random, dk, out, plaintext, dataAAD(c))
	if err != nil {
		return nil, fmt.Errorf("sealing: %w", err)
	}
	return out, nil
}

// Open decrypts ct for c with kek, the project key of the version KeyVersion named.
func Open(kek keyring.Key, c Context, ct []byte) ([]byte, error) {
	dk, err := unwrap(kek, c, ct)
	if err != nil {
		return nil, err
	}
	defer clear(dk[:])
	body := ct[headerSize+wrapSize:]
	pt, err := open(dk, body, dataAAD(c))
	if err != nil {
		return nil, ErrUnauthentic
	}
	return pt, nil
}

// Rewrap re-wraps ct's data key from oldKEK to newKEK (the project key of
// newVersion), leaving the sealed value as it is. The value is never decrypted.
func Rewrap(random io.Reader, oldKEK, newKEK keyring.Key, newVersion uint32, c Context, ct []byte) ([]byte, error) {
	dk, err := unwrap(oldKEK, c, ct)
	if err != nil {
		return nil, err
	}
	defer clear(dk[:])
	out := make([]byte, headerSize, len(ct))
	copy(out, ct[:headerSize])
	binary.BigEndian.PutUint32(out[len(magic)+1:], newVersion)
	out, err = seal(random, newKEK, out, dk[:], wrapAAD(out[:headerSize], c))
	if err != nil {
		return nil, fmt.Errorf("re-wrapping the data key: %w", err)
	}
	return append(out, ct[headerSize+wrapSize:]...), nil
}

// unwrap checks ct's header and returns its data key.
func unwrap(kek keyring.Key, c Context, ct []byte) (keyring.Key, error) {
	var dk keyring.Key
	if _, err := KeyVersion(ct); err != nil {
		return dk, err
	}
	raw, err := open(kek, ct[headerSize:headerSize+wrapSize], wrapAAD(ct[:headerSize], c))
	if err != nil || len(raw) != keyring.KeySize {
		return dk, ErrUnauthentic
	}
	copy(dk[:], raw)
	clear(raw)
	return dk, nil
}

// seal appends nonce || AES-256-GCM(key, plaintext, aad) to dst.
func seal(random io.Reader, key keyring.Key, dst, plaintext, aad []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	n := len(dst)
	dst = append(dst, make([]byte, nonceSize)...)
	if _, err := io.ReadFull(random, dst[n:]); err != nil {
		return nil, fmt.Errorf("generating a nonce: %w", err)
	}
	return aead.Seal(dst, dst[n:], plaintext, aad), nil
}

// open reverses seal for in = nonce || ciphertext.
func open(key keyring.Key, in, aad []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	return aead.Open(nil, in[:nonceSize], in[nonceSize:], aad)
}

func newGCM(key keyring.Key) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// wrapAAD binds the wrapped data key to the header (so to the key version) and c.
func wrapAAD(header []byte, c Context) []byte {
	return appendContext(append([]byte("latchkey vault data key\x00"), header...), c)
}

// dataAAD binds the value to the format and c.
func dataAAD(c Context) []byte {
	return appendContext(append([]byte("latchkey vault value\x00"+magic), Format), c)
}

// appendContext appends each part of c with a length prefix, so no two contexts
// encode alike ("a"+"bc" differs from "ab"+"c").
func appendContext(b []byte, c Context) []byte {
	for _, s := range []string{c.Project, c.Kind, c.ID} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}
