package store

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/libs/errs"
)

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{})
	ctx := t.Context()
	e.project(t, "acme")
	e.project(t, "other")
	key, secret, err := e.s.CreateKey(ctx, "acme", "ci")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "lk_") || !strings.HasPrefix(secret, strings.TrimSuffix(key.GetPrefix(), "...")) || key.GetProjectId() != "acme" {
		t.Fatalf("key %v, secret prefix %.6s", key, secret)
	}
	v, err := e.s.VerifyKey(ctx, secret)
	if err != nil || v.ProjectID != "acme" || v.KeyID != key.GetId() {
		t.Fatalf("VerifyKey = %+v, %v", v, err)
	}

	last := "A"
	if strings.HasSuffix(secret, "A") {
		last = "B"
	}
	wrong := secret[:len(secret)-1] + last
	for name, k := range map[string]string{
		"wrong secret": wrong, "empty": "", "no prefix": strings.TrimPrefix(secret, "lk_"),
		"short": "lk_abc", "unknown id": "lk_" + strings.Repeat("a", keyIDLen) + "_x",
		"bad id chars": "lk_" + strings.Repeat("A", keyIDLen) + "_x",
	} {
		if _, err := e.s.VerifyKey(ctx, k); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("%s: VerifyKey = %v, want ErrUnknownKey", name, err)
		}
	}

	// The key is stored only as a hash.
	keys, err := liveKeys(ctx, e.s.keys, ">")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		entry, err := e.s.keys.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(entry.Value(), []byte(secret[len(secret)-20:])) {
			t.Errorf("LK_APIKEYS %s holds the key in plaintext", k)
		}
	}

	// Another project can neither revoke nor see it.
	wantKind(t, e.s.RevokeKey(ctx, "other", key.GetId()), errs.ErrNotFound)
	wantKind(t, e.s.RevokeKey(ctx, "acme", "Not An Id"), errs.ErrNotFound)
	if ks, err := e.s.ListKeys(ctx, "other"); err != nil || len(ks) != 0 {
		t.Fatalf("other's keys = %v, %v", ks, err)
	}

	if err := e.s.RevokeKey(ctx, "acme", key.GetId()); err != nil {
		t.Fatal(err)
	}
	if err := e.s.RevokeKey(ctx, "acme", key.GetId()); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	if _, err := e.s.VerifyKey(ctx, secret); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("revoked key verifies: %v", err)
	}
	ks, err := e.s.ListKeys(ctx, "acme")
	if err != nil || len(ks) != 1 || ks[0].GetRevokeTime() == nil || ks[0].GetName() != "ci" {
		t.Fatalf("ListKeys = %v, %v", ks, err)
	}
	_, _, err = e.s.CreateKey(ctx, "missing", "x")
	wantKind(t, err, errs.ErrNotFound)
	_, _, err = e.s.CreateKey(ctx, "acme", strings.Repeat("n", MaxKeyName+1))
	wantKind(t, err, errs.ErrInvalid)
}
