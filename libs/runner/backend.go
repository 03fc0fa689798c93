package runner

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// StateStore reads what the registry keeps about sessions: a session's sealed state
// revisions and its vars.
type StateStore = sdk.StateStore

// StateWriter stores sealed states; a StateStore that implements it lets the runner
// write back the state a task ended with itself, merging with a concurrent writer.
type StateWriter = sdk.StateWriter

// BundleStore reads deployed bundles.
type BundleStore = sdk.BundleStore

// Vault seals and opens blobs and reads secrets. Every Open and Secret is audited by
// the vault with the Run it serves.
type Vault = sdk.Vault

// Sealed names what a ciphertext is bound to: a ciphertext opens only with the same
// project, kind and id.
type Sealed = sdk.Sealed

// ErrStateConflict is returned by StateWriter.PutStorageState when another writer
// stored a newer revision first.
var ErrStateConflict = sdk.ErrStateConflict

// ErrRevisionGone is returned by StateStore.StorageState for a revision the registry
// no longer keeps (newer ones replaced it); the newest is the one to use.
var ErrRevisionGone = sdk.ErrRevisionGone

// GRPC implements StateStore, BundleStore and Vault with the registry's
// SessionStateService and the credential vault's VaultService.
type GRPC struct {
	Registry registryv1.SessionStateServiceClient
	Vault    vaultv1.VaultServiceClient
}

var (
	_ StateStore  = GRPC{}
	_ BundleStore = GRPC{}
	_ Vault       = GRPC{}
)

// StorageState calls SessionStateService.GetStorageState.
func (g GRPC) StorageState(ctx context.Context, project, session string, revision int64) ([]byte, int64, error) {
	resp, err := g.Registry.GetStorageState(ctx, &registryv1.GetStorageStateRequest{ProjectId: project, AuthSessionId: session, Revision: revision})
	if status.Code(err) == codes.NotFound && revision > 0 {
		return nil, 0, fmt.Errorf("reading storage state revision %d: %w", revision, ErrRevisionGone)
	}
	if err != nil {
		return nil, 0, backendError("reading storage state", err)
	}
	return resp.GetCiphertext(), resp.GetRevision(), nil
}

// PutStorageState calls SessionStateService.PutStorageState.
func (g GRPC) PutStorageState(ctx context.Context, project, session string, sealed []byte, base int64) (int64, error) {
	resp, err := g.Registry.PutStorageState(ctx, &registryv1.PutStorageStateRequest{ProjectId: project, AuthSessionId: session, Ciphertext: sealed, BaseRevision: base})
	if status.Code(err) == codes.Aborted {
		return 0, ErrStateConflict
	}
	if err != nil {
		return 0, backendError("storing storage state", err)
	}
	return resp.GetRevision(), nil
}

// SessionVars calls SessionStateService.GetSession.
func (g GRPC) SessionVars(ctx context.Context, project, session string) (map[string]string, error) {
	resp, err := g.Registry.GetSession(ctx, &registryv1.GetSessionRequest{ProjectId: project, AuthSessionId: session})
	if err != nil {
		return nil, backendError("reading session", err)
	}
	return resp.GetAuthSession().GetVars(), nil
}

// Bundle calls SessionStateService.GetBundle.
func (g GRPC) Bundle(ctx context.Context, project, site string, version int64) ([]recipe.File, int64, error) {
	resp, err := g.Registry.GetBundle(ctx, &registryv1.GetBundleRequest{ProjectId: project, Site: site, Version: version})
	if err != nil {
		return nil, 0, backendError("reading bundle", err)
	}
	var files []recipe.File
	for _, f := range resp.GetBundle().GetFiles() {
		files = append(files, recipe.File{Path: f.GetPath(), Content: f.GetContent()})
	}
	return files, resp.GetBundle().GetVersion(), nil
}

// Seal calls VaultService.Encrypt.
func (g GRPC) Seal(ctx context.Context, to Sealed, plaintext []byte) ([]byte, error) {
	resp, err := g.Vault.Encrypt(ctx, &vaultv1.EncryptRequest{Context: cryptoContext(to), Plaintext: plaintext})
	if err != nil {
		return nil, backendError("sealing "+to.Kind, err)
	}
	return resp.GetCiphertext(), nil
}

// Open calls VaultService.Decrypt, naming the Run as the purpose.
func (g GRPC) Open(ctx context.Context, from Sealed, ciphertext []byte, runID string) ([]byte, error) {
	resp, err := g.Vault.Decrypt(ctx, &vaultv1.DecryptRequest{
		Context: cryptoContext(from), Ciphertext: ciphertext,
		Reason: &vaultv1.AccessReason{Purpose: "run:" + runID, RunId: runID},
	})
	if err != nil {
		return nil, backendError("opening "+from.Kind, err)
	}
	return resp.GetPlaintext(), nil
}

// Secret calls VaultService.GetSecret, naming the Run as the purpose.
func (g GRPC) Secret(ctx context.Context, project, secretID, runID string) (map[string]string, error) {
	resp, err := g.Vault.GetSecret(ctx, &vaultv1.GetSecretRequest{
		ProjectId: project, SecretId: secretID,
		Reason: &vaultv1.AccessReason{Purpose: "run:" + runID, RunId: runID},
	})
	if err != nil {
		return nil, backendError("reading secret "+secretID, err)
	}
	return resp.GetFields(), nil
}

func cryptoContext(s Sealed) *vaultv1.CryptoContext {
	return &vaultv1.CryptoContext{ProjectId: s.Project, Kind: s.Kind, Id: s.ID}
}

// backendError keeps a user's problem (a missing secret, a state that no longer
// opens) apart from an outage of the registry or the vault, which is retried by
// redelivering the task. gRPC messages of our own services never carry a secret.
func backendError(doing string, err error) error {
	switch status.Code(err) {
	case codes.NotFound, codes.InvalidArgument, codes.FailedPrecondition, codes.PermissionDenied:
		return fmt.Errorf("%s: %s", doing, status.Convert(err).Message())
	default:
		return sdk.Infra("%s: %w", doing, err)
	}
}
