package api

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/errs"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	"github.com/latchkey/latchkey/services/session-registry/internal/store"
)

// Limits of ListSessionsDueForRefresh.
const (
	DefaultDueLimit = 100
	MaxDueLimit     = 1000
)

// SessionState is latchkey.registry.v1.SessionStateService, for Latchkey's own
// services (internal token only): they name the project in each request.
type SessionState struct {
	registryv1.UnimplementedSessionStateServiceServer
	*API
}

// GetSession returns a session with its etag.
func (a SessionState) GetSession(ctx context.Context, req *registryv1.GetSessionRequest) (*registryv1.GetSessionResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *registryv1.GetSessionRequest) (*registryv1.GetSessionResponse, error) {
		sess, err := st.GetSession(ctx, req.GetProjectId(), req.GetAuthSessionId())
		if err != nil {
			return nil, err
		}
		return &registryv1.GetSessionResponse{AuthSession: sess.Public()}, nil
	})
}

// TransitionSession moves a session with compare-and-swap on its etag; a lost race
// answers Aborted and an illegal move FailedPrecondition, both with the current
// session in the status details.
func (a SessionState) TransitionSession(ctx context.Context, req *registryv1.TransitionSessionRequest) (*registryv1.TransitionSessionResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *registryv1.TransitionSessionRequest) (*registryv1.TransitionSessionResponse, error) {
		sess, err := st.Transition(ctx, req)
		if err != nil {
			return nil, err
		}
		return &registryv1.TransitionSessionResponse{AuthSession: sess.Public()}, nil
	})
}

// GetStorageState returns a sealed state revision (0: the newest).
func (a SessionState) GetStorageState(ctx context.Context, req *registryv1.GetStorageStateRequest) (*registryv1.GetStorageStateResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *registryv1.GetStorageStateRequest) (*registryv1.GetStorageStateResponse, error) {
		ct, rev, err := st.GetState(ctx, req.GetProjectId(), req.GetAuthSessionId(), req.GetRevision())
		if err != nil {
			return nil, err
		}
		return &registryv1.GetStorageStateResponse{Ciphertext: ct, Revision: rev}, nil
	})
}

// PutStorageState stores a sealed state if base_revision is still the newest;
// otherwise it answers Aborted and the writer merges (libs/storagestate.Merge) and
// tries again.
func (a SessionState) PutStorageState(ctx context.Context, req *registryv1.PutStorageStateRequest) (*registryv1.PutStorageStateResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *registryv1.PutStorageStateRequest) (*registryv1.PutStorageStateResponse, error) {
		rev, err := st.PutState(ctx, req.GetProjectId(), req.GetAuthSessionId(), req.GetCiphertext(), store.PutOptions{
			Base: req.GetBaseRevision(), KnownGood: req.GetKnownGood(),
		})
		if err != nil {
			return nil, err
		}
		return &registryv1.PutStorageStateResponse{Revision: rev}, nil
	})
}

// GetBundle returns a deployed bundle with its files (0: the newest).
func (a SessionState) GetBundle(ctx context.Context, req *registryv1.GetBundleRequest) (*registryv1.GetBundleResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *registryv1.GetBundleRequest) (*registryv1.GetBundleResponse, error) {
		b, err := st.GetBundle(ctx, req.GetProjectId(), req.GetSite(), req.GetVersion())
		if err != nil {
			return nil, err
		}
		return &registryv1.GetBundleResponse{Bundle: b}, nil
	})
}

// AuthenticateApiKey resolves an API key for services that serve public RPCs.
func (a SessionState) AuthenticateApiKey(ctx context.Context, req *registryv1.AuthenticateApiKeyRequest) (*registryv1.AuthenticateApiKeyResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *registryv1.AuthenticateApiKeyRequest) (*registryv1.AuthenticateApiKeyResponse, error) {
		if a.isAdminKey(req.GetApiKey()) {
			return &registryv1.AuthenticateApiKeyResponse{Admin: true, ApiKeyId: "admin"}, nil
		}
		v, err := st.VerifyKey(ctx, req.GetApiKey())
		if errors.Is(err, store.ErrUnknownKey) {
			return nil, errs.New(errs.ErrUnauthenticated, "unknown or revoked API key")
		}
		if err != nil {
			return nil, err
		}
		return &registryv1.AuthenticateApiKeyResponse{ProjectId: v.ProjectID, ApiKeyId: v.KeyID}, nil
	})
}

// ListSessionsDueForRefresh lists READY sessions whose refresh is due, most overdue first.
func (a SessionState) ListSessionsDueForRefresh(ctx context.Context, req *registryv1.ListSessionsDueForRefreshRequest) (*registryv1.ListSessionsDueForRefreshResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *registryv1.ListSessionsDueForRefreshRequest) (*registryv1.ListSessionsDueForRefreshResponse, error) {
		limit := int(req.GetLimit())
		switch {
		case limit < 0:
			return nil, invalid("limit must not be negative")
		case limit == 0:
			limit = DefaultDueLimit
		case limit > MaxDueLimit:
			limit = MaxDueLimit
		}
		now := time.Now()
		if req.GetNow() != nil {
			now = req.GetNow().AsTime()
		}
		due, next, err := st.ListDue(ctx, now, limit)
		if err != nil {
			return nil, err
		}
		resp := &registryv1.ListSessionsDueForRefreshResponse{AuthSessions: due}
		if !next.IsZero() {
			resp.NextDueTime = timestamppb.New(next)
		}
		return resp, nil
	})
}

// CompleteCredentialsUpdate promotes or discards the pending credentials of a session
// when its AUTHSESSION_UPDATE Run ends.
func (a SessionState) CompleteCredentialsUpdate(ctx context.Context, req *registryv1.CompleteCredentialsUpdateRequest) (*registryv1.CompleteCredentialsUpdateResponse, error) {
	return handle(ctx, a.API, req, a.completeUpdate)
}
