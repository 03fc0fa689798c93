package sdk

import (
	"context"
	"errors"

	"github.com/latchkey/latchkey/libs/recipe"
)

// StateStore reads what the registry keeps about sessions.
type StateStore interface {
	// StorageState returns a session's state revision as the vault sealed it (0: the
	// newest) and the revision it is.
	StorageState(ctx context.Context, project, session string, revision int64) (ciphertext []byte, rev int64, err error)
	// SessionVars returns the session's vars, which recipes see over the bundle's.
	SessionVars(ctx context.Context, project, session string) (map[string]string, error)
}

// StateWriter stores sealed states; a StateStore that implements it lets the runner
// write back the state a task ended with itself, merging with a concurrent writer.
type StateWriter interface {
	// PutStorageState stores sealed as the revision after base and returns it, or
	// ErrStateConflict when base is no longer the newest.
	PutStorageState(ctx context.Context, project, session string, sealed []byte, base int64) (int64, error)
}

// ErrStateConflict is returned by StateWriter.PutStorageState when another writer
// stored a newer revision first.
var ErrStateConflict = errors.New("a newer storage state revision exists")

// BundleStore reads deployed bundles.
type BundleStore interface {
	// Bundle returns the files of a version (0: the newest) of the bundle of a
	// project's site (empty: the default site) and the version it is.
	Bundle(ctx context.Context, project, site string, version int64) ([]recipe.File, int64, error)
}

// Sealed names what a ciphertext is bound to: a ciphertext opens only with the same
// project, kind and id.
type Sealed struct {
	Project string
	// Kind is for example "storage_state", "runtime_credentials" or "resume_answers".
	Kind string
	ID   string
}

// Vault seals and opens blobs and reads secrets. Every Open and Secret is audited by
// the vault with the Run it serves.
type Vault interface {
	Seal(ctx context.Context, to Sealed, plaintext []byte) ([]byte, error)
	Open(ctx context.Context, from Sealed, ciphertext []byte, runID string) ([]byte, error)
	Secret(ctx context.Context, project, secretID, runID string) (map[string]string, error)
}

// ErrRevisionGone is returned by StateStore.StorageState for a revision the registry
// no longer keeps (newer ones replaced it); the newest is the one to use.
var ErrRevisionGone = errors.New("storage state revision no longer kept")
