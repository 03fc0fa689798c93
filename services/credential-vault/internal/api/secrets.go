package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/services/credential-vault/internal/envelope"
	"github.com/latchkey/latchkey/services/credential-vault/internal/store"
)

// fields are a secret's named values. They redact themselves when printed or logged.
type fields map[string]string

const redactedFields = "[REDACTED fields]"

// String implements fmt.Stringer without the values.
func (fields) String() string { return redactedFields }

// GoString keeps %#v from printing the values.
func (fields) GoString() string { return redactedFields }

// Format keeps every fmt verb from printing the values.
func (fields) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redactedFields)) }

// LogValue implements slog.LogValuer without the values.
func (fields) LogValue() slog.Value { return slog.StringValue(redactedFields) }

func secretContext(project, id string) envelope.Context {
	return envelope.Context{Project: project, Kind: secretKind, ID: id}
}

// PutSecret seals a secret's fields under a fresh data key and stores them with
// compare-and-swap.
func (s *Server) PutSecret(ctx context.Context, req *vaultv1.PutSecretRequest) (*vaultv1.PutSecretResponse, error) {
	rev, err := s.putSecret(ctx, req)
	if err != nil {
		return nil, s.toStatus(ctx, "PutSecret", err)
	}
	return &vaultv1.PutSecretResponse{Revision: rev}, nil
}

func (s *Server) putSecret(ctx context.Context, req *vaultv1.PutSecretRequest) (uint64, error) {
	if err := checkProject("project_id", req.GetProjectId()); err != nil {
		return 0, err
	}
	if err := checkSecretID(req.GetSecretId()); err != nil {
		return 0, err
	}
	if err := checkFields(req.GetFields()); err != nil {
		return 0, err
	}
	pt, err := json.Marshal(fields(req.GetFields()))
	if err != nil {
		return 0, fmt.Errorf("encoding secret fields: %w", err)
	}
	defer clear(pt)
	ct, _, err := s.seal(ctx, secretContext(req.GetProjectId(), req.GetSecretId()), pt)
	if err != nil {
		return 0, err
	}
	mode := store.Create
	switch {
	case req.GetExpectedRevision() != 0:
		mode = store.Update
	case req.GetOverwrite():
		mode = store.Replace
	}
	db, err := s.db()
	if err != nil {
		return 0, err
	}
	return db.Put(ctx, req.GetProjectId(), req.GetSecretId(), ct, mode, req.GetExpectedRevision())
}

// GetSecret opens a stored secret and returns its fields, after recording the access
// on the audit log.
func (s *Server) GetSecret(ctx context.Context, req *vaultv1.GetSecretRequest) (*vaultv1.GetSecretResponse, error) {
	f, rev, err := s.getSecret(ctx, req)
	if err != nil {
		return nil, s.toStatus(ctx, "GetSecret", err)
	}
	return &vaultv1.GetSecretResponse{Fields: f, Revision: rev}, nil
}

func (s *Server) getSecret(ctx context.Context, req *vaultv1.GetSecretRequest) (fields, uint64, error) {
	project, id := req.GetProjectId(), req.GetSecretId()
	if err := checkProject("project_id", project); err != nil {
		return nil, 0, err
	}
	if err := checkSecretID(id); err != nil {
		return nil, 0, err
	}
	if err := checkReason(req.GetReason()); err != nil {
		return nil, 0, err
	}
	db, err := s.db()
	if err != nil {
		return nil, 0, err
	}
	sec, err := db.Get(ctx, project, id)
	if err != nil {
		return nil, 0, err
	}
	pt, v, err := s.open(ctx, secretContext(project, id), sec.Ciphertext)
	if err != nil {
		return nil, 0, err
	}
	defer clear(pt)
	var f fields
	if err := json.Unmarshal(pt, &f); err != nil {
		return nil, 0, fmt.Errorf("decoding secret %s of project %s: corrupt fields", id, project)
	}
	if err := s.record(ctx, project, secretKind, id, v, req.GetReason()); err != nil {
		return nil, 0, err
	}
	return f, sec.Revision, nil
}

// DeleteSecret deletes a secret; deleting a missing one succeeds.
func (s *Server) DeleteSecret(ctx context.Context, req *vaultv1.DeleteSecretRequest) (*vaultv1.DeleteSecretResponse, error) {
	if err := s.deleteSecret(ctx, req); err != nil {
		return nil, s.toStatus(ctx, "DeleteSecret", err)
	}
	return &vaultv1.DeleteSecretResponse{}, nil
}

func (s *Server) deleteSecret(ctx context.Context, req *vaultv1.DeleteSecretRequest) error {
	if err := checkProject("project_id", req.GetProjectId()); err != nil {
		return err
	}
	if err := checkSecretID(req.GetSecretId()); err != nil {
		return err
	}
	db, err := s.db()
	if err != nil {
		return err
	}
	return db.Delete(ctx, req.GetProjectId(), req.GetSecretId())
}

// Encrypt seals a blob for its context under a fresh data key.
func (s *Server) Encrypt(ctx context.Context, req *vaultv1.EncryptRequest) (*vaultv1.EncryptResponse, error) {
	c, err := checkContext(req.GetContext())
	if err == nil && len(req.GetPlaintext()) > MaxPlaintextBytes {
		err = invalid("plaintext is %d bytes, at most %d allowed", len(req.GetPlaintext()), MaxPlaintextBytes)
	}
	var ct []byte
	var v uint32
	if err == nil {
		ct, v, err = s.seal(ctx, c, req.GetPlaintext())
	}
	if err != nil {
		return nil, s.toStatus(ctx, "Encrypt", err)
	}
	s.count(ctx, "encrypt", c.Kind)
	return &vaultv1.EncryptResponse{Ciphertext: ct, KeyVersion: v}, nil
}

// Decrypt opens a blob for its context, after recording the access on the audit log.
func (s *Server) Decrypt(ctx context.Context, req *vaultv1.DecryptRequest) (*vaultv1.DecryptResponse, error) {
	pt, err := s.decrypt(ctx, req)
	if err != nil {
		return nil, s.toStatus(ctx, "Decrypt", err)
	}
	s.count(ctx, "decrypt", req.GetContext().GetKind())
	return &vaultv1.DecryptResponse{Plaintext: pt}, nil
}

func (s *Server) decrypt(ctx context.Context, req *vaultv1.DecryptRequest) ([]byte, error) {
	c, err := checkContext(req.GetContext())
	if err != nil {
		return nil, err
	}
	if err := checkCiphertext(req.GetCiphertext()); err != nil {
		return nil, err
	}
	if err := checkReason(req.GetReason()); err != nil {
		return nil, err
	}
	pt, v, err := s.open(ctx, c, req.GetCiphertext())
	if err != nil {
		return nil, err
	}
	if err := s.record(ctx, c.Project, c.Kind, c.ID, v, req.GetReason()); err != nil {
		clear(pt)
		return nil, err
	}
	return pt, nil
}

func (s *Server) count(ctx context.Context, op, kind string) {
	if s.d.Count != nil {
		s.d.Count(ctx, op, kind)
	}
}
