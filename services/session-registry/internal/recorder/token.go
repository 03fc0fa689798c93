package recorder

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// A recorder token is the capability in a recorder URL: base64url(JSON claims) "."
// base64url(HMAC-SHA256(key, first part)). The key is derived from the internal token
// (bus.DeriveKey), so any registry replica can check a token another one minted.

// maxTokenLen bounds what the handlers parse at all.
const maxTokenLen = 1024

// Errors of parse, each answered with its own HTTP status.
var (
	errBadToken = errors.New("this recorder link is not valid")
	errExpired  = errors.New("this recorder link has expired")
)

// claims are what a token grants: recording one Run's browser for one session, until
// expiry.
type claims struct {
	Project string `json:"p"`
	Session string `json:"s"`
	Run     string `json:"r"`
	Expiry  int64  `json:"e"` // unix seconds
	Nonce   string `json:"n"`
}

func (c claims) expires() time.Time { return time.Unix(c.Expiry, 0) }

// mint signs c into a token.
func mint(key []byte, c claims) (string, error) {
	var n [9]byte
	if _, err := rand.Read(n[:]); err != nil {
		return "", err
	}
	c.Nonce = base64.RawURLEncoding.EncodeToString(n[:])
	b, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	body := base64.RawURLEncoding.EncodeToString(b)
	return body + "." + base64.RawURLEncoding.EncodeToString(sign(key, body)), nil
}

func sign(key []byte, body string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(body))
	return m.Sum(nil)
}

// parse checks a token's signature and expiry and returns its claims.
func parse(key []byte, token string, now time.Time) (claims, error) {
	var c claims
	if len(token) > maxTokenLen {
		return c, errBadToken
	}
	body, sig, ok := strings.Cut(token, ".")
	if !ok {
		return c, errBadToken
	}
	// Strict: the last character's spare bits must be zero, so one signature has one
	// spelling (else four spellings of a token would each get a claim of their own).
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil || !hmac.Equal(got, sign(key, body)) {
		return c, errBadToken
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(body)
	if err != nil || json.Unmarshal(b, &c) != nil || c.Project == "" || c.Session == "" || c.Run == "" || c.Nonce == "" {
		return c, errBadToken
	}
	if !now.Before(c.expires()) {
		return c, errExpired
	}
	return c, nil
}

// tokenID names a minted token in LK_RECORDINGS and logs without revealing it: a
// hash of its Run and random nonce, so however the token is spelt it has one claim.
func tokenID(c claims) string {
	d := sha256.Sum256([]byte(c.Run + "." + c.Nonce))
	return hex.EncodeToString(d[:16])
}
