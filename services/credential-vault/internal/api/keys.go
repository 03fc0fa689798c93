package api

import (
	"context"
	"errors"
	"fmt"

	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/services/credential-vault/internal/audit"
	"github.com/latchkey/latchkey/services/credential-vault/internal/envelope"
	"github.com/latchkey/latchkey/services/credential-vault/internal/store"
)

// errStale is a change refused because stored secrets still need a key version it
// would disable, or could not be rewrapped.
var errStale = errors.New("stored secrets are wrapped under older key versions")

// RotateKey adds a master key version and makes it the one that encrypts.
func (s *Server) RotateKey(ctx context.Context, _ *vaultv1.RotateKeyRequest) (*vaultv1.RotateKeyResponse, error) {
	k, err := s.keeper()
	var v uint32
	if err == nil {
		v, err = k.Rotate(ctx)
	}
	if err != nil {
		return nil, s.toStatus(ctx, "RotateKey", err)
	}
	s.d.Logger.InfoContext(ctx, "rotated the master key", "new_version", v)
	return &vaultv1.RotateKeyResponse{NewVersion: v}, nil
}

// KeyStatus reports the ring and how many stored secrets each version wraps.
func (s *Server) KeyStatus(ctx context.Context, _ *vaultv1.KeyStatusRequest) (*vaultv1.KeyStatusResponse, error) {
	k, err := s.keeper()
	var counts map[uint32]int64
	if err == nil {
		counts, err = s.countByVersion(ctx)
	}
	if err != nil {
		return nil, s.toStatus(ctx, "KeyStatus", err)
	}
	st := k.State()
	return &vaultv1.KeyStatusResponse{
		CurrentVersion: st.Current, MinDecryptionVersion: st.Min,
		Versions: st.Numbers(), WrappedByVersion: counts,
	}, nil
}

// countByVersion counts stored secrets per master key version.
func (s *Server) countByVersion(ctx context.Context) (map[uint32]int64, error) {
	db, err := s.db()
	if err != nil {
		return nil, err
	}
	counts := make(map[uint32]int64)
	err = db.Scan(ctx, store.AllSecrets, func(e store.Entry) error {
		if v, err := envelope.KeyVersion(e.Ciphertext); err == nil {
			counts[v]++
		}
		return nil
	})
	return counts, err
}

// SetMinDecryptionVersion disables decryption under older versions, refusing while
// stored secrets still need them.
func (s *Server) SetMinDecryptionVersion(ctx context.Context, req *vaultv1.SetMinDecryptionVersionRequest) (*vaultv1.SetMinDecryptionVersionResponse, error) {
	if err := s.setMinimum(ctx, req.GetMinDecryptionVersion()); err != nil {
		return nil, s.toStatus(ctx, "SetMinDecryptionVersion", err)
	}
	s.d.Logger.InfoContext(ctx, "set the minimum decryption version", "min_decryption_version", req.GetMinDecryptionVersion())
	return &vaultv1.SetMinDecryptionVersionResponse{}, nil
}

func (s *Server) setMinimum(ctx context.Context, minimum uint32) error {
	k, err := s.keeper()
	if err != nil {
		return err
	}
	if cur := k.State().Current; minimum < 1 || minimum > cur {
		return invalid("min_decryption_version must be between 1 and the current version %d, got %d", cur, minimum)
	}
	counts, err := s.countByVersion(ctx)
	if err != nil {
		return err
	}
	var below int64
	for v, n := range counts {
		if v < minimum {
			below += n
		}
	}
	if below > 0 {
		return fmt.Errorf("%d stored secrets are still wrapped under versions below %d: run Rewrap (`latchkey vault rewrap`) first: %w", below, minimum, errStale)
	}
	return k.SetMinimum(ctx, minimum)
}

// ShredProject destroys a project's key material and deletes its secrets.
func (s *Server) ShredProject(ctx context.Context, req *vaultv1.ShredProjectRequest) (*vaultv1.ShredProjectResponse, error) {
	n, err := s.shred(ctx, req.GetProjectId())
	if err != nil {
		return nil, s.toStatus(ctx, "ShredProject", err)
	}
	s.d.Logger.InfoContext(ctx, "shredded a project's keys", "project_id", req.GetProjectId(), "secrets_deleted", n)
	return &vaultv1.ShredProjectResponse{}, nil
}

func (s *Server) shred(ctx context.Context, project string) (int, error) {
	if err := checkProject("project_id", project); err != nil {
		return 0, err
	}
	db, err := s.db()
	if err != nil {
		return 0, err
	}
	return db.Shred(ctx, project)
}

// ListAuditEvents lists a project's audit events, oldest first.
func (s *Server) ListAuditEvents(ctx context.Context, req *vaultv1.ListAuditEventsRequest) (*vaultv1.ListAuditEventsResponse, error) {
	events, next, err := s.listAudit(ctx, req)
	if err != nil {
		return nil, s.toStatus(ctx, "ListAuditEvents", err)
	}
	return &vaultv1.ListAuditEventsResponse{Events: events, NextPageToken: next}, nil
}

func (s *Server) listAudit(ctx context.Context, req *vaultv1.ListAuditEventsRequest) ([]*vaultv1.AuditEvent, string, error) {
	if err := checkProject("project_id", req.GetProjectId()); err != nil {
		return nil, "", err
	}
	if len(req.GetResourceId()) > MaxContextIDLen {
		return nil, "", invalid("resource_id is %d characters long, at most %d allowed", len(req.GetResourceId()), MaxContextIDLen)
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, "", invalid("page_size must not be negative, got %d", size)
	case size == 0:
		size = audit.DefaultPageSize
	case size > audit.MaxPageSize:
		size = audit.MaxPageSize
	}
	return s.d.Audit.List(ctx, req.GetProjectId(), req.GetResourceId(), size, req.GetPageToken())
}
