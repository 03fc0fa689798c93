package api

import (
	"context"
	"errors"

	"github.com/latchkey/latchkey/libs/errs"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/storagestate"
	"github.com/latchkey/latchkey/services/session-registry/internal/store"
)

// importAttempts bounds the retries of an import racing other writers.
const importAttempts = 3

// ImportStorageState validates Playwright storageState JSON, seals it in the vault for
// the session, and stores it as the newest revision. A PENDING or EXPIRED session
// becomes READY (a RECORDER session is usually filled this way).
func (a AuthSessions) ImportStorageState(ctx context.Context, req *latchkeyv1.ImportStorageStateRequest) (*latchkeyv1.ImportStorageStateResponse, error) {
	return handle(ctx, a.API, req, a.importState)
}

func (a AuthSessions) importState(ctx context.Context, st *store.Store, req *latchkeyv1.ImportStorageStateRequest) (*latchkeyv1.ImportStorageStateResponse, error) {
	project, err := callerProject(ctx)
	if err != nil {
		return nil, err
	}
	id := req.GetAuthSessionId()
	if _, err := st.GetSession(ctx, project, id); err != nil {
		return nil, err
	}
	parsed, err := storagestate.FromPlaywright(req.GetStorageStateJson())
	if err != nil {
		return nil, stateError(err)
	}
	plain, err := storagestate.Marshal(parsed)
	if err != nil {
		return nil, stateError(err)
	}
	enc, err := a.d.Vault.Encrypt(ctx, &vaultv1.EncryptRequest{Context: storagestate.CryptoContext(project, id), Plaintext: plain})
	clear(plain)
	if err != nil {
		return nil, a.peer(ctx, "the credential vault", err)
	}
	for attempt := 1; ; attempt++ {
		sess, err := st.GetSession(ctx, project, id)
		if err != nil {
			return nil, err
		}
		base := sess.Rec.GetSession().GetStateRevision()
		_, err = st.PutState(ctx, project, id, enc.GetCiphertext(), store.PutOptions{Base: base, Ready: true})
		if errors.Is(err, errs.ErrStale) && attempt < importAttempts {
			continue // a Run wrote meanwhile: the import replaces its state too
		}
		if err != nil {
			return nil, err
		}
		sess, err = st.GetSession(ctx, project, id)
		if err != nil {
			return nil, err
		}
		a.d.Log.InfoContext(ctx, "storage state imported", "project_id", project, "auth_session_id", id, "revision", sess.Rec.GetSession().GetStateRevision())
		out := sess.Public()
		if err := st.MarkUnattended(ctx, project, out); err != nil {
			return nil, err
		}
		return &latchkeyv1.ImportStorageStateResponse{AuthSession: out}, nil
	}
}

// stateError maps a libs/storagestate error; its messages never quote a value.
func stateError(err error) error {
	if errors.Is(err, storagestate.ErrTooLarge) {
		return errs.New(errs.ErrTooLarge, "storage_state_json: %v (the limit is %d bytes)", err, storagestate.MaxBytes)
	}
	if errors.Is(err, storagestate.ErrInvalid) {
		return errs.New(errs.ErrInvalid, "storage_state_json: %v", err)
	}
	return err
}

// ExportStorageState opens a stored state in the vault (audited, purpose "export")
// and returns it as Playwright storageState JSON.
func (a AuthSessions) ExportStorageState(ctx context.Context, req *latchkeyv1.ExportStorageStateRequest) (*latchkeyv1.ExportStorageStateResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *latchkeyv1.ExportStorageStateRequest) (*latchkeyv1.ExportStorageStateResponse, error) {
		project, err := callerProject(ctx)
		if err != nil {
			return nil, err
		}
		id := req.GetAuthSessionId()
		ct, rev, err := st.GetState(ctx, project, id, req.GetRevision())
		if err != nil {
			return nil, err
		}
		dec, err := a.d.Vault.Decrypt(ctx, &vaultv1.DecryptRequest{
			Context: storagestate.CryptoContext(project, id), Ciphertext: ct, Reason: &vaultv1.AccessReason{Purpose: "export"},
		})
		if err != nil {
			return nil, a.peer(ctx, "the credential vault", err)
		}
		parsed, err := storagestate.Unmarshal(dec.GetPlaintext())
		clear(dec.Plaintext)
		if err != nil {
			return nil, err
		}
		out, err := storagestate.ToPlaywright(parsed)
		if err != nil {
			return nil, err
		}
		a.d.Log.InfoContext(ctx, "storage state exported", "project_id", project, "auth_session_id", id, "revision", rev)
		return &latchkeyv1.ExportStorageStateResponse{StorageStateJson: out, Revision: rev}, nil
	})
}
