package api

import (
	"fmt"
	"unicode/utf8"

	"github.com/latchkey/latchkey/libs/domain"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/services/credential-vault/internal/envelope"
)

// Limits, documented in docs/credential-vault.md. Requests beyond them get
// InvalidArgument.
const (
	MaxProjectIDLen    = 128
	MaxSecretIDLen     = 128
	MaxKindLen         = 64
	MaxContextIDLen    = 256
	MaxFields          = 32
	MaxFieldNameLen    = 64
	MaxFieldValueBytes = 16 << 10
	MaxSecretBytes     = 64 << 10
	// MaxPlaintextBytes bounds Encrypt. It stays under gRPC's default 4 MiB message
	// limit with room for the envelope, and above storage states' 2 MiB.
	MaxPlaintextBytes  = 3 << 20
	MaxCiphertextBytes = MaxPlaintextBytes + envelope.Overhead
	MaxPurposeLen      = 256
	MaxRunIDLen        = 128
)

// secretKind is the context kind stored secrets are sealed with; Encrypt and Decrypt
// may not use it, so a blob can never pass for a stored secret or the reverse.
const secretKind = domain.KindSecret

// invalidError is a request the caller must fix; its message says how.
type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }

func invalid(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

// charset tests one byte of an id.
type charset func(b byte) bool

func lowerAlnum(b byte) bool { return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' }
func alnum(b byte) bool      { return lowerAlnum(b) || b >= 'A' && b <= 'Z' }

// Charsets of ids. Projects and secrets go into KV keys and NATS subjects; the
// context id and resource ids only into authenticated data and audit events.
var (
	projectChars = func(b byte) bool { return alnum(b) || b == '-' || b == '_' }
	secretChars  = func(b byte) bool { return lowerAlnum(b) || b == '-' || b == '_' }
	kindChars    = func(b byte) bool { return lowerAlnum(b) || b == '_' || b == '-' }
	fieldChars   = func(b byte) bool { return alnum(b) || b == '_' || b == '-' || b == '.' }
	idChars      = func(b byte) bool {
		return alnum(b) || b == '-' || b == '_' || b == '.' || b == ':' || b == '=' || b == '/'
	}
)

// checkID checks one id against its length limit and charset; rule describes both.
func checkID(field, v string, maxLen int, ok charset, rule string) error {
	if v == "" {
		return invalid("%s is empty: use %s", field, rule)
	}
	if len(v) > maxLen {
		return invalid("%s is %d characters long, at most %d allowed", field, len(v), maxLen)
	}
	for i := 0; i < len(v); i++ {
		if !ok(v[i]) {
			return invalid("%s %q is invalid: use %s", field, v, rule)
		}
	}
	return nil
}

func checkProject(field, v string) error {
	return checkID(field, v, MaxProjectIDLen, projectChars, "1-128 letters, digits, '-' or '_'")
}

func checkSecretID(v string) error {
	return checkID("secret_id", v, MaxSecretIDLen, secretChars, "1-128 lowercase letters, digits, '-' or '_'")
}

// checkContext validates a CryptoContext and converts it.
func checkContext(c *vaultv1.CryptoContext) (envelope.Context, error) {
	if c == nil {
		return envelope.Context{}, invalid("context is missing: pass the project_id, kind and id the blob belongs to")
	}
	if err := checkProject("context.project_id", c.GetProjectId()); err != nil {
		return envelope.Context{}, err
	}
	if err := checkID("context.kind", c.GetKind(), MaxKindLen, kindChars, "1-64 lowercase letters, digits, '-' or '_', such as storage_state"); err != nil {
		return envelope.Context{}, err
	}
	if c.GetKind() == secretKind {
		return envelope.Context{}, invalid("context.kind %q is reserved for stored secrets: use PutSecret and GetSecret", secretKind)
	}
	if err := checkID("context.id", c.GetId(), MaxContextIDLen, idChars, "1-256 letters, digits or '-_.:=/'"); err != nil {
		return envelope.Context{}, err
	}
	return envelope.Context{Project: c.GetProjectId(), Kind: c.GetKind(), ID: c.GetId()}, nil
}

// checkFields validates a secret's fields; it never quotes a value.
func checkFields(fields map[string]string) error {
	if len(fields) == 0 {
		return invalid("fields is empty: a secret needs at least one field, such as username or password")
	}
	if len(fields) > MaxFields {
		return invalid("fields has %d entries, at most %d allowed", len(fields), MaxFields)
	}
	total := 0
	for name, value := range fields {
		if err := checkID("field name", name, MaxFieldNameLen, fieldChars, "1-64 letters, digits, '_', '-' or '.'"); err != nil {
			return err
		}
		if len(value) > MaxFieldValueBytes {
			return invalid("field %q is %d bytes, at most %d allowed", name, len(value), MaxFieldValueBytes)
		}
		if !utf8.ValidString(value) {
			return invalid("field %q is not valid UTF-8", name)
		}
		total += len(name) + len(value)
	}
	if total > MaxSecretBytes {
		return invalid("the secret's fields add up to %d bytes, at most %d allowed", total, MaxSecretBytes)
	}
	return nil
}

// checkReason validates an AccessReason; it is optional, but bounded.
func checkReason(r *vaultv1.AccessReason) error {
	if len(r.GetPurpose()) > MaxPurposeLen {
		return invalid("reason.purpose is %d characters long, at most %d allowed", len(r.GetPurpose()), MaxPurposeLen)
	}
	if len(r.GetRunId()) > MaxRunIDLen {
		return invalid("reason.run_id is %d characters long, at most %d allowed", len(r.GetRunId()), MaxRunIDLen)
	}
	if !utf8.ValidString(r.GetPurpose()) {
		return invalid("reason.purpose is not valid UTF-8")
	}
	return nil
}

// checkCiphertext bounds a ciphertext's size before any work is done on it.
func checkCiphertext(ct []byte) error {
	switch {
	case len(ct) == 0:
		return invalid("ciphertext is empty: pass the bytes Encrypt returned")
	case len(ct) > MaxCiphertextBytes:
		return invalid("ciphertext is %d bytes, at most %d allowed", len(ct), MaxCiphertextBytes)
	}
	return nil
}
