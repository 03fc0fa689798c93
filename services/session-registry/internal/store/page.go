package store

import (
	"encoding/base64"
	"encoding/json"

	"github.com/latchkey/latchkey/libs/errs"
)

// Page sizes of List calls.
const (
	DefaultPageSize = 50
	MaxPageSize     = 500
)

// Page is a position in a list: where to start and how many to return.
type Page struct {
	Size  int
	Token string
}

// pageToken is what a page token holds. Tokens are opaque to users: base64 of this,
// bound to the query (scope) they came from.
type pageToken struct {
	Scope string `json:"s"`
	After string `json:"a"`
}

// size returns the page size to use, or an error for a negative one.
func (p Page) size() (int, error) {
	switch {
	case p.Size < 0:
		return 0, errs.New(errs.ErrInvalid, "page_size must not be negative")
	case p.Size == 0:
		return DefaultPageSize, nil
	case p.Size > MaxPageSize:
		return MaxPageSize, nil
	}
	return p.Size, nil
}

// after decodes the token: the key after which the page starts ("" for the first).
func (p Page) after(scope string) (string, error) {
	if p.Token == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(p.Token)
	var t pageToken
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	if err != nil || t.Scope != scope || t.After == "" {
		return "", errs.New(errs.ErrInvalid, "page_token is not valid for this list: pass the next_page_token of the previous page with the same filters, or none")
	}
	return t.After, nil
}

func nextToken(scope, after string) string {
	b, _ := json.Marshal(pageToken{Scope: scope, After: after}) // strings only: cannot fail
	return base64.RawURLEncoding.EncodeToString(b)
}
