package bus

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// The live view of a recording (DESIGN.md section 8) crosses core NATS between the
// runner that hosts the browser and the registry that serves the recorder page. What
// the person types is a secret, so every live message is sealed: AES-256-GCM under a
// key both services derive from the internal token they already share, with the
// subject as additional data, so a message cannot be replayed onto another recording.

// ErrLiveMessage is returned by OpenLive for a message that was not sealed for its
// subject with this key.
var ErrLiveMessage = errors.New("live message does not open")

// DeriveKey derives a 32-byte key for one purpose from a shared secret (the internal
// token), so that one secret never keys two different uses.
func DeriveKey(secret, purpose string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("latchkey/" + purpose))
	return m.Sum(nil)
}

// LiveKeyPurpose is the DeriveKey purpose of the live-view key.
const LiveKeyPurpose = "live-view/v1"

// SealLive seals a live message for subject: a random 12-byte nonce, then the
// ciphertext and tag.
func SealLive(key []byte, subject string, plain []byte) ([]byte, error) {
	aead, err := liveAEAD(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, fmt.Errorf("sealing live message: %w", err)
	}
	return aead.Seal(out, out, plain, []byte(subject)), nil
}

// OpenLive opens a message SealLive sealed for subject.
func OpenLive(key []byte, subject string, sealed []byte) ([]byte, error) {
	aead, err := liveAEAD(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, ErrLiveMessage
	}
	n := aead.NonceSize()
	plain, err := aead.Open(nil, sealed[:n], sealed[n:], []byte(subject))
	if err != nil {
		return nil, ErrLiveMessage
	}
	return plain, nil
}

func liveAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, errors.New("live-view key must be 32 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
