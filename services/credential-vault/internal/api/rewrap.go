package api

import (
	"context"
	"errors"
	"fmt"

	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/services/credential-vault/internal/envelope"
	"github.com/latchkey/latchkey/services/credential-vault/internal/keyring"
	"github.com/latchkey/latchkey/services/credential-vault/internal/store"
)

// Rewrap re-wraps data keys under the current master key version: the one
// ciphertext passed, or every stored secret. Values are never decrypted.
func (s *Server) Rewrap(ctx context.Context, req *vaultv1.RewrapRequest) (*vaultv1.RewrapResponse, error) {
	if req.GetContext() != nil || len(req.GetCiphertext()) > 0 {
		ct, err := s.rewrapOne(ctx, req)
		if err != nil {
			return nil, s.toStatus(ctx, "Rewrap", err)
		}
		return &vaultv1.RewrapResponse{Ciphertext: ct}, nil
	}
	n, err := s.rewrapStored(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, "Rewrap", err)
	}
	s.d.Logger.InfoContext(ctx, "rewrapped stored secrets", "rewrapped", n)
	return &vaultv1.RewrapResponse{Rewrapped: n}, nil
}

func (s *Server) rewrapOne(ctx context.Context, req *vaultv1.RewrapRequest) ([]byte, error) {
	c, err := checkContext(req.GetContext())
	if err != nil {
		return nil, err
	}
	if err := checkCiphertext(req.GetCiphertext()); err != nil {
		return nil, err
	}
	if _, err := envelope.KeyVersion(req.GetCiphertext()); err != nil {
		return nil, err
	}
	ctx, span := s.span(ctx, "vault rewrap", c)
	defer span.End()
	db, err := s.db()
	if err != nil {
		return nil, endSpan(span, err)
	}
	salt, err := db.Material(ctx, c.Project)
	if err != nil {
		return nil, endSpan(span, err)
	}
	ct, _, err := s.rewrap(c, req.GetCiphertext(), salt)
	return ct, endSpan(span, err)
}

// rewrap re-wraps ct for c under the current version, unless it is already there
// (or newer: this replica may not have seen a rotation yet). changed tells which.
func (s *Server) rewrap(c envelope.Context, ct, salt []byte) (out []byte, changed bool, err error) {
	k, err := s.keeper()
	if err != nil {
		return nil, false, err
	}
	v, err := envelope.KeyVersion(ct)
	if err != nil {
		return nil, false, err
	}
	cur, curMaster, err := k.Current()
	if err != nil {
		return nil, false, err
	}
	if v >= cur {
		return ct, false, nil
	}
	old, err := k.ForDecrypt(v)
	if err != nil {
		return nil, false, err
	}
	oldKEK := keyring.ProjectKey(old, salt, c.Project)
	newKEK := keyring.ProjectKey(curMaster, salt, c.Project)
	out, err = envelope.Rewrap(s.d.Rand, oldKEK, newKEK, cur, c, ct)
	return out, err == nil, err
}

// rewrapStored rewraps every stored secret under an older version. A secret written
// meanwhile is read again; one that cannot be rewrapped is logged and counted, and
// the call fails at the end (after doing all the others) so it can be retried.
func (s *Server) rewrapStored(ctx context.Context) (int64, error) {
	db, err := s.db()
	if err != nil {
		return 0, err
	}
	salts := make(map[string][]byte)
	var done, failed int64
	err = db.Scan(ctx, store.AllSecrets, func(e store.Entry) error {
		changed, err := s.rewrapEntry(ctx, db, e, salts)
		switch {
		case err == nil && changed:
			done++
		case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
			return err
		case err != nil:
			failed++
			s.d.Logger.WarnContext(ctx, "could not rewrap a secret", "project_id", e.Project, "secret_id", e.ID, "reason", errorClass(err), "error", err)
		}
		return nil
	})
	if err != nil {
		return done, err
	}
	if failed > 0 {
		return done, fmt.Errorf("rewrapped %d secrets, but %d could not be rewrapped (the vault log names them): %w", done, failed, errStale)
	}
	return done, nil
}

// rewrapEntry rewraps one stored secret, reading it again if it changed meanwhile.
func (s *Server) rewrapEntry(ctx context.Context, db *store.Store, e store.Entry, salts map[string][]byte) (bool, error) {
	salt, ok := salts[e.Project]
	if !ok {
		var err error
		if salt, err = db.Material(ctx, e.Project); err != nil {
			return false, err
		}
		salts[e.Project] = salt
	}
	c := secretContext(e.Project, e.ID)
	for range 3 {
		ct, changed, err := s.rewrap(c, e.Ciphertext, salt)
		if err != nil || !changed {
			return false, err
		}
		err = db.ReplaceEntry(ctx, e, ct)
		if !errors.Is(err, store.ErrRevisionMismatch) {
			return err == nil, err
		}
		sec, err := db.Get(ctx, e.Project, e.ID)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil // deleted meanwhile
		}
		if err != nil {
			return false, err
		}
		e.Secret = sec
	}
	return false, fmt.Errorf("secret %s of project %s keeps changing: %w", e.ID, e.Project, store.ErrRevisionMismatch)
}
