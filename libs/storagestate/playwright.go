package storagestate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// pwState is Playwright's storageState JSON
// (https://playwright.dev/docs/api/class-browsercontext#browser-context-storage-state).
// sessionStorage is a Latchkey extension, written only when captured; indexedDB is as
// Playwright 1.51 and later write it.
type pwState struct {
	Cookies []pwCookie `json:"cookies"`
	Origins []pwOrigin `json:"origins"`
}

type pwCookie struct {
	Name     string   `json:"name"`
	Value    string   `json:"value"`
	Domain   string   `json:"domain"`
	Path     string   `json:"path"`
	Expires  *float64 `json:"expires,omitempty"`
	HTTPOnly bool     `json:"httpOnly"`
	Secure   bool     `json:"secure"`
	SameSite string   `json:"sameSite,omitempty"`
}

type pwOrigin struct {
	Origin         string               `json:"origin"`
	LocalStorage   []pwItem             `json:"localStorage"`
	SessionStorage []pwItem             `json:"sessionStorage,omitempty"`
	IndexedDB      []PlaywrightDatabase `json:"indexedDB,omitempty"`
}

type pwItem struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// FromPlaywright parses Playwright storageState JSON and validates it. A cookie with
// no path gets "/" and one with no expires is a session cookie (-1), as in Playwright.
// Unknown fields are refused, so a typo does not silently drop data.
func FromPlaywright(b []byte) (*latchkeyv1.StorageState, error) {
	if len(b) > MaxBytes {
		return nil, fmt.Errorf("%w: %d bytes of JSON, at most %d", ErrTooLarge, len(b), MaxBytes)
	}
	var pw pwState
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pw); err != nil {
		return nil, fmt.Errorf("%w: not Playwright storageState JSON: %s", ErrInvalid, jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: not Playwright storageState JSON: extra data after the object", ErrInvalid)
	}
	st := &latchkeyv1.StorageState{}
	for _, c := range pw.Cookies {
		pc := &latchkeyv1.Cookie{
			Name: c.Name, Value: c.Value, Domain: c.Domain, Path: c.Path, Expires: -1,
			HttpOnly: c.HTTPOnly, Secure: c.Secure, SameSite: c.SameSite,
		}
		if pc.Path == "" {
			pc.Path = "/"
		}
		if c.Expires != nil {
			pc.Expires = *c.Expires
		}
		st.Cookies = append(st.Cookies, pc)
	}
	for _, o := range pw.Origins {
		st.Origins = append(st.Origins, &latchkeyv1.OriginStorage{
			Origin: o.Origin, LocalStorage: fromItems(o.LocalStorage), SessionStorage: fromItems(o.SessionStorage),
			IndexedDb: DatabasesFromPlaywright(o.IndexedDB),
		})
	}
	if err := Validate(st); err != nil {
		return nil, err
	}
	return st, nil
}

// jsonProblem describes a decoding error without quoting the input, which may hold a
// cookie value.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %s must be a %s", typ.Field, typ.Type)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON ends early"
	default:
		// DisallowUnknownFields: `json: unknown field "x"` names a field, not a value.
		return err.Error()
	}
}

func fromItems(items []pwItem) []*latchkeyv1.StorageItem {
	out := make([]*latchkeyv1.StorageItem, 0, len(items))
	for _, it := range items {
		out = append(out, &latchkeyv1.StorageItem{Name: it.Name, Value: it.Value})
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// ToPlaywright returns st as Playwright storageState JSON, indented.
func ToPlaywright(st *latchkeyv1.StorageState) ([]byte, error) {
	pw := pwState{Cookies: []pwCookie{}, Origins: []pwOrigin{}}
	for _, c := range st.GetCookies() {
		exp := c.GetExpires()
		pw.Cookies = append(pw.Cookies, pwCookie{
			Name: c.GetName(), Value: c.GetValue(), Domain: c.GetDomain(), Path: c.GetPath(), Expires: &exp,
			HTTPOnly: c.GetHttpOnly(), Secure: c.GetSecure(), SameSite: c.GetSameSite(),
		})
	}
	for _, o := range st.GetOrigins() {
		pw.Origins = append(pw.Origins, pwOrigin{
			Origin: o.GetOrigin(), LocalStorage: toItems(o.GetLocalStorage()), SessionStorage: toItems(o.GetSessionStorage()),
			IndexedDB: DatabasesToPlaywright(o.GetIndexedDb()),
		})
	}
	b, err := json.MarshalIndent(pw, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding storageState JSON: %w", err)
	}
	return b, nil
}

func toItems(items []*latchkeyv1.StorageItem) []pwItem {
	out := make([]pwItem, 0, len(items))
	for _, it := range items {
		out = append(out, pwItem{Name: it.GetName(), Value: it.GetValue()})
	}
	return out
}
