// Package api implements vaultv1.VaultService: credentials (PutSecret, GetSecret,
// DeleteSecret), encryption as a service (Encrypt, Decrypt), key management
// (RotateKey, Rewrap, KeyStatus, SetMinDecryptionVersion, ShredProject) and the audit
// trail (ListAuditEvents). Plaintext exists only in this process, for the length of
// a call; it is never logged, traced or put in an error.
package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/services/credential-vault/internal/audit"
	"github.com/latchkey/latchkey/services/credential-vault/internal/envelope"
	"github.com/latchkey/latchkey/services/credential-vault/internal/keyring"
	"github.com/latchkey/latchkey/services/credential-vault/internal/store"
)

// Deps are what the API works with.
type Deps struct {
	Audit  *audit.Log
	Rand   io.Reader
	Now    func() time.Time
	Tracer trace.Tracer
	Logger *slog.Logger
	// Count, if set, counts an operation that succeeded ("encrypt", "decrypt",
	// "get_secret") on a kind of blob; never a project or id.
	Count func(ctx context.Context, op, kind string)
}

// Server is the VaultService implementation.
type Server struct {
	vaultv1.UnimplementedVaultServiceServer
	d      Deps
	opened atomic.Pointer[opened]
}

// opened is what the server gets once the vault has started.
type opened struct {
	keys  *keyring.Keeper
	store *store.Store
}

// New returns a Server; it answers Unavailable until Open.
func New(d Deps) *Server { return &Server{d: d} }

// Open gives the server its key ring and store once the vault has started.
func (s *Server) Open(k *keyring.Keeper, st *store.Store) {
	s.opened.Store(&opened{keys: k, store: st})
}

// errNotReady is a call that arrived before the vault had started.
var errNotReady = errors.New("the vault is starting")

func (s *Server) keeper() (*keyring.Keeper, error) {
	o := s.opened.Load()
	if o == nil {
		return nil, errNotReady
	}
	return o.keys, nil
}

func (s *Server) db() (*store.Store, error) {
	o := s.opened.Load()
	if o == nil {
		return nil, errNotReady
	}
	return o.store, nil
}

// sealKey returns the current version and the project's key under it, creating the
// project's key material on first use.
func (s *Server) sealKey(ctx context.Context, project string) (uint32, keyring.Key, error) {
	k, err := s.keeper()
	if err != nil {
		return 0, keyring.Key{}, err
	}
	v, master, err := k.Current()
	if err != nil {
		return 0, keyring.Key{}, err
	}
	db, err := s.db()
	if err != nil {
		return 0, keyring.Key{}, err
	}
	salt, err := db.EnsureMaterial(ctx, project)
	if err != nil {
		return 0, keyring.Key{}, err
	}
	return v, keyring.ProjectKey(master, salt, project), nil
}

// openKey returns the version ct names and the project's key under it.
func (s *Server) openKey(ctx context.Context, project string, ct []byte) (uint32, keyring.Key, error) {
	k, err := s.keeper()
	if err != nil {
		return 0, keyring.Key{}, err
	}
	v, err := envelope.KeyVersion(ct)
	if err != nil {
		return 0, keyring.Key{}, err
	}
	master, err := k.ForDecrypt(v)
	if err != nil {
		return v, keyring.Key{}, err
	}
	db, err := s.db()
	if err != nil {
		return v, keyring.Key{}, err
	}
	salt, err := db.Material(ctx, project)
	if err != nil {
		return v, keyring.Key{}, err
	}
	return v, keyring.ProjectKey(master, salt, project), nil
}

// seal encrypts pt for c under the current version, in a span of its own.
func (s *Server) seal(ctx context.Context, c envelope.Context, pt []byte) ([]byte, uint32, error) {
	ctx, span := s.span(ctx, "vault seal", c)
	defer span.End()
	v, kek, err := s.sealKey(ctx, c.Project)
	if err != nil {
		return nil, 0, endSpan(span, err)
	}
	span.SetAttributes(attribute.Int64("latchkey.key_version", int64(v)))
	ct, err := envelope.Seal(s.d.Rand, kek, v, c, pt)
	return ct, v, endSpan(span, err)
}

// open decrypts ct for c, in a span of its own.
func (s *Server) open(ctx context.Context, c envelope.Context, ct []byte) ([]byte, uint32, error) {
	ctx, span := s.span(ctx, "vault open", c)
	defer span.End()
	v, kek, err := s.openKey(ctx, c.Project, ct)
	if err != nil {
		return nil, v, endSpan(span, err)
	}
	span.SetAttributes(attribute.Int64("latchkey.key_version", int64(v)))
	pt, err := envelope.Open(kek, c, ct)
	return pt, v, endSpan(span, err)
}

func (s *Server) span(ctx context.Context, name string, c envelope.Context) (context.Context, trace.Span) {
	return s.d.Tracer.Start(ctx, name, trace.WithAttributes(
		attribute.String("latchkey.project_id", c.Project),
		attribute.String("latchkey.crypto_kind", c.Kind),
		attribute.String("latchkey.resource_id", c.ID),
	))
}

// endSpan marks span failed with err's class (never its text, which is ours but
// need not be in traces) and returns err.
func endSpan(span trace.Span, err error) error {
	if err != nil {
		span.SetStatus(codes.Error, errorClass(err))
	}
	return err
}

// record publishes the audit event of a decrypt; the plaintext is released only if
// it succeeds.
func (s *Server) record(ctx context.Context, project, kind, resource string, version uint32, reason *vaultv1.AccessReason) error {
	caller := "unknown"
	if p, ok := server.PrincipalFrom(ctx); ok && p.Service != "" {
		caller = p.Service
	}
	ev := &vaultv1.AuditEvent{
		ProjectId: project, Kind: kind, ResourceId: resource, Caller: caller,
		Reason:     &vaultv1.AccessReason{Purpose: reason.GetPurpose(), RunId: reason.GetRunId()},
		KeyVersion: version, Time: timestamppb.New(s.d.Now()),
	}
	if err := s.d.Audit.Publish(ctx, ev); err != nil {
		return &auditError{err: err}
	}
	return nil
}
