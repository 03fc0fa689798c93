// Package storagestate converts, validates and merges browser storage states
// (latchkey.v1.StorageState): Playwright's storageState JSON, the bytes the vault seals,
// and the cookie-wise merge a writer runs when two Runs wrote back at once.
//
// A storage state is plaintext only inside the runner (and briefly in the registry
// while a user imports or exports one): everything here works on values in memory and
// never logs, and its errors never quote a cookie or storage value.
package storagestate

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/domain"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
)

// Limits of a storage state. MaxBytes is the documented size limit: a state whose
// Playwright JSON or sealed encoding is larger is refused (ResourceExhausted in the
// APIs). Real logged-in states are a few KiB to a few hundred KiB.
const (
	MaxBytes          = 2 << 20
	MaxCookies        = 3000
	MaxOrigins        = 1000
	MaxItemsPerOrigin = 5000
	MaxNameBytes      = 4096
)

// CryptoKind is the vault CryptoContext kind storage states are sealed with.
const CryptoKind = domain.KindStorageState

// Errors; each failure wraps one of them.
var (
	// ErrInvalid is a state that breaks a rule: a missing cookie name, a bad origin.
	ErrInvalid = errors.New("invalid storage state")
	// ErrTooLarge is a state over MaxBytes or another limit above.
	ErrTooLarge = errors.New("storage state too large")
)

// CryptoContext is the context a session's storage states are sealed with: a
// ciphertext opens only for the same project and session.
func CryptoContext(projectID, sessionID string) *vaultv1.CryptoContext {
	return &vaultv1.CryptoContext{ProjectId: projectID, Kind: CryptoKind, Id: sessionID}
}

// Marshal returns the bytes that are sealed: the deterministic protobuf encoding of
// st. It validates st first.
func Marshal(st *latchkeyv1.StorageState) ([]byte, error) {
	if err := Validate(st); err != nil {
		return nil, err
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encoding storage state: %w", err)
	}
	if len(b) > MaxBytes {
		return nil, fmt.Errorf("%w: %d bytes encoded, at most %d", ErrTooLarge, len(b), MaxBytes)
	}
	return b, nil
}

// Unmarshal decodes what Marshal returned (after the vault opened it) and validates it.
func Unmarshal(b []byte) (*latchkeyv1.StorageState, error) {
	if len(b) > MaxBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(b), MaxBytes)
	}
	st := &latchkeyv1.StorageState{}
	if err := proto.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("%w: not an encoded storage state", ErrInvalid)
	}
	if err := Validate(st); err != nil {
		return nil, err
	}
	return st, nil
}

// Validate checks st against the rules and limits of this package. Its errors name
// the offending cookie by index, name and domain, or the origin — never a value.
func Validate(st *latchkeyv1.StorageState) error {
	if st == nil {
		return fmt.Errorf("%w: no state", ErrInvalid)
	}
	if n := len(st.GetCookies()); n > MaxCookies {
		return fmt.Errorf("%w: %d cookies, at most %d", ErrTooLarge, n, MaxCookies)
	}
	if n := len(st.GetOrigins()); n > MaxOrigins {
		return fmt.Errorf("%w: %d origins, at most %d", ErrTooLarge, n, MaxOrigins)
	}
	seen := make(map[cookieKey]bool, len(st.GetCookies()))
	for i, c := range st.GetCookies() {
		if err := validateCookie(c); err != nil {
			return fmt.Errorf("cookie %d (%.64q on %.64q): %w", i, c.GetName(), c.GetDomain(), err)
		}
		k := keyOf(c)
		if seen[k] {
			return fmt.Errorf("cookie %d (%.64q on %.64q): %w: the same name, domain and path appear twice", i, c.GetName(), c.GetDomain(), ErrInvalid)
		}
		seen[k] = true
	}
	origins := make(map[string]bool, len(st.GetOrigins()))
	for i, o := range st.GetOrigins() {
		if err := validateOrigin(o); err != nil {
			return fmt.Errorf("origin %d (%.128q): %w", i, o.GetOrigin(), err)
		}
		if origins[o.GetOrigin()] {
			return fmt.Errorf("origin %d (%.128q): %w: the origin appears twice", i, o.GetOrigin(), ErrInvalid)
		}
		origins[o.GetOrigin()] = true
	}
	return nil
}

func validateCookie(c *latchkeyv1.Cookie) error {
	switch {
	case c.GetName() == "":
		return fmt.Errorf("%w: name is empty", ErrInvalid)
	case len(c.GetName()) > MaxNameBytes:
		return fmt.Errorf("%w: name longer than %d bytes", ErrInvalid, MaxNameBytes)
	case c.GetDomain() == "" || strings.ContainsAny(c.GetDomain(), "/: \t"):
		return fmt.Errorf("%w: domain must be a host name such as example.com or .example.com", ErrInvalid)
	case c.GetPath() == "" || !strings.HasPrefix(c.GetPath(), "/"):
		return fmt.Errorf("%w: path must start with /", ErrInvalid)
	case math.IsNaN(c.GetExpires()) || math.IsInf(c.GetExpires(), 0) || (c.GetExpires() < 0 && c.GetExpires() != -1):
		return fmt.Errorf("%w: expires must be Unix seconds, or -1 for a session cookie", ErrInvalid)
	}
	switch c.GetSameSite() {
	case "", "Strict", "Lax", "None":
	default:
		return fmt.Errorf("%w: sameSite must be Strict, Lax or None", ErrInvalid)
	}
	return nil
}

func validateOrigin(o *latchkeyv1.OriginStorage) error {
	u, err := url.Parse(o.GetOrigin())
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%w: origin must be scheme://host[:port], such as https://example.com", ErrInvalid)
	}
	for _, items := range [][]*latchkeyv1.StorageItem{o.GetLocalStorage(), o.GetSessionStorage()} {
		if len(items) > MaxItemsPerOrigin {
			return fmt.Errorf("%w: %d storage items, at most %d", ErrTooLarge, len(items), MaxItemsPerOrigin)
		}
		seen := make(map[string]bool, len(items))
		for j, it := range items {
			switch {
			case it.GetName() == "":
				return fmt.Errorf("%w: storage item %d has an empty name", ErrInvalid, j)
			case len(it.GetName()) > MaxNameBytes:
				return fmt.Errorf("%w: storage item %d has a name longer than %d bytes", ErrInvalid, j, MaxNameBytes)
			case seen[it.GetName()]:
				return fmt.Errorf("%w: storage item %.64q appears twice", ErrInvalid, it.GetName())
			}
			seen[it.GetName()] = true
		}
	}
	return validateDatabases(o.GetIndexedDb())
}

// cookieKey identifies a cookie as a browser does: name, domain and path.
type cookieKey struct{ name, domain, path string }

func keyOf(c *latchkeyv1.Cookie) cookieKey {
	return cookieKey{c.GetName(), c.GetDomain(), c.GetPath()}
}
