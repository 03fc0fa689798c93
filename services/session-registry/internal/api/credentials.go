package api

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/errs"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/services/session-registry/internal/store"
)

// PendingUpdateTTL is how long a credentials update blocks the next one. A scheduler
// that never reports its end (CompleteCredentialsUpdate) blocks no longer than this.
const PendingUpdateTTL = 15 * time.Minute

// UpdateAuthSessionCredentials stores the new credentials as pending
// (session-<id>-pending) and starts an AUTHSESSION_UPDATE Run. They replace the old
// ones only when the scheduler reports that Run succeeded (CompleteCredentialsUpdate).
// If the Run cannot be started, nothing changes.
func (a AuthSessions) UpdateAuthSessionCredentials(ctx context.Context, req *latchkeyv1.UpdateAuthSessionCredentialsRequest) (*latchkeyv1.UpdateAuthSessionCredentialsResponse, error) {
	return handle(ctx, a.API, req, a.updateCredentials)
}

func (a AuthSessions) updateCredentials(ctx context.Context, st *store.Store, req *latchkeyv1.UpdateAuthSessionCredentialsRequest) (*latchkeyv1.UpdateAuthSessionCredentialsResponse, error) {
	project, err := callerProject(ctx)
	if err != nil {
		return nil, err
	}
	id := req.GetAuthSessionId()
	if _, err := st.GetSession(ctx, project, id); err != nil {
		return nil, err
	}
	if err := checkCredentials(req.GetCredentials()); err != nil {
		return nil, err
	}
	claimed, err := a.claimUpdate(ctx, st, project, id)
	if err != nil {
		return nil, err
	}
	release := func(deleteSecret bool) {
		ctx := context.WithoutCancel(ctx)
		if deleteSecret {
			if _, err := a.d.Vault.DeleteSecret(ctx, &vaultv1.DeleteSecretRequest{ProjectId: project, SecretId: pendingSecret(id)}); err != nil {
				a.d.Log.ErrorContext(ctx, "pending credentials left behind", "project_id", project, "auth_session_id", id, "error", err)
			}
		}
		a.releaseUpdate(ctx, st, project, id, claimed, "")
	}
	if err := a.putSecret(ctx, project, pendingSecret(id), req.GetCredentials()); err != nil {
		release(false)
		return nil, err
	}
	runID, err := a.startRun(ctx, project, &latchkeyv1.StartRunRequest{
		Api: recipe.CreateAPI, AuthSessionId: id, Kind: latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE,
		IdempotencyKey: "registry-update-" + id + "-" + claimed.AsTime().Format(time.RFC3339Nano),
	})
	if err != nil {
		release(true)
		return nil, err
	}
	_, err = st.UpdateSession(ctx, project, id, 0, func(rec *registryv1.SessionRecord) error {
		if rec.GetPendingUpdateTime().AsTime().Equal(claimed.AsTime()) {
			rec.PendingUpdateRunId = runID
		}
		return nil
	})
	if err != nil {
		// CompleteCredentialsUpdate accepts a claim without a run id, so the Run still
		// completes the update.
		a.d.Log.WarnContext(ctx, "credentials update run id not recorded", "auth_session_id", id, "run_id", runID, "error", err)
	}
	a.d.Log.InfoContext(ctx, "credentials update started", "project_id", project, "auth_session_id", id, "run_id", runID)
	return &latchkeyv1.UpdateAuthSessionCredentialsResponse{UpdateRunId: runID}, nil
}

// claimUpdate marks a credentials update as pending, refusing a session that is not
// CREDENTIALS or has another update running. It returns the claim's time.
func (a AuthSessions) claimUpdate(ctx context.Context, st *store.Store, project, id string) (*timestamppb.Timestamp, error) {
	now := timestamppb.Now()
	_, err := st.UpdateSession(ctx, project, id, 0, func(rec *registryv1.SessionRecord) error {
		switch rec.GetSession().GetType() {
		case latchkeyv1.SessionType_SESSION_TYPE_RUNTIME:
			return errs.New(errs.ErrPrecondition, "auth session %q is a RUNTIME session: its credentials are passed with each Run and never stored", id)
		case latchkeyv1.SessionType_SESSION_TYPE_RECORDER:
			return errs.New(errs.ErrPrecondition, "auth session %q is a RECORDER session: a person logs in, it has no credentials", id)
		}
		if t := rec.GetPendingUpdateTime(); t != nil && now.AsTime().Sub(t.AsTime()) < PendingUpdateTTL {
			return errs.New(errs.ErrPrecondition, "a credentials update of auth session %q is already running (Run %q); wait for it to end", id, rec.GetPendingUpdateRunId())
		}
		rec.PendingUpdateTime, rec.PendingUpdateRunId = now, ""
		return nil
	})
	return now, err
}

// releaseUpdate clears the pending update claimed at claimed (or by runID).
func (a *API) releaseUpdate(ctx context.Context, st *store.Store, project, id string, claimed *timestamppb.Timestamp, runID string) {
	_, err := st.UpdateSession(ctx, project, id, 0, func(rec *registryv1.SessionRecord) error {
		mine := (claimed != nil && rec.GetPendingUpdateTime().AsTime().Equal(claimed.AsTime())) ||
			(runID != "" && rec.GetPendingUpdateRunId() == runID)
		if mine {
			rec.PendingUpdateTime, rec.PendingUpdateRunId = nil, ""
		}
		return nil
	})
	if err != nil {
		a.d.Log.ErrorContext(ctx, "pending credentials update not cleared", "auth_session_id", id, "error", err)
	}
}

// completeUpdate promotes or discards the pending credentials of a session when its
// AUTHSESSION_UPDATE Run ends (SessionStateService.CompleteCredentialsUpdate).
func (a *API) completeUpdate(ctx context.Context, st *store.Store, req *registryv1.CompleteCredentialsUpdateRequest) (*registryv1.CompleteCredentialsUpdateResponse, error) {
	project, id, runID := req.GetProjectId(), req.GetAuthSessionId(), req.GetRunId()
	if runID == "" {
		return nil, invalid("run_id is required: the AUTHSESSION_UPDATE Run that ended")
	}
	sess, err := st.GetSession(ctx, project, id)
	if err != nil {
		return nil, err
	}
	rec := sess.Rec
	if rec.GetPendingUpdateTime() == nil {
		return &registryv1.CompleteCredentialsUpdateResponse{}, nil // already completed
	}
	if pending := rec.GetPendingUpdateRunId(); pending != "" && pending != runID {
		return nil, errs.New(errs.ErrPrecondition, "Run %q is not the pending credentials update of auth session %q (that is Run %q)", runID, id, pending)
	}
	if req.GetSucceeded() {
		if err := a.promote(ctx, project, id, runID); err != nil {
			return nil, err
		}
	} else if _, err := a.d.Vault.DeleteSecret(ctx, &vaultv1.DeleteSecretRequest{ProjectId: project, SecretId: pendingSecret(id)}); err != nil {
		return nil, a.peer(ctx, "the credential vault", err)
	}
	a.releaseUpdate(ctx, st, project, id, rec.GetPendingUpdateTime(), runID)
	a.d.Log.InfoContext(ctx, "credentials update completed", "project_id", project, "auth_session_id", id, "run_id", runID, "succeeded", req.GetSucceeded())
	return &registryv1.CompleteCredentialsUpdateResponse{}, nil
}

// promote copies the pending credentials over the session's and deletes them. A
// pending secret already gone was promoted by an earlier, interrupted call.
func (a *API) promote(ctx context.Context, project, id, runID string) error {
	got, err := a.d.Vault.GetSecret(ctx, &vaultv1.GetSecretRequest{
		ProjectId: project, SecretId: pendingSecret(id),
		Reason: &vaultv1.AccessReason{Purpose: "promote-credentials", RunId: runID},
	})
	if errors.Is(errs.FromStatus(err), errs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return a.peer(ctx, "the credential vault", err)
	}
	if err := a.putSecret(ctx, project, credentialsSecret(id), got.GetFields()); err != nil {
		return err
	}
	clear(got.Fields)
	if _, err := a.d.Vault.DeleteSecret(ctx, &vaultv1.DeleteSecretRequest{ProjectId: project, SecretId: pendingSecret(id)}); err != nil {
		return a.peer(ctx, "the credential vault", err)
	}
	return nil
}
