package engine

import (
	"context"
	"crypto/sha256"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/runner/internal/chrome"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
	"github.com/latchkey/latchkey/libs/storagestate"
)

// prepareState puts the state the task starts from into the context: the candidate of
// a verifying check, or the session's revision — skipped when a warm jar already
// holds it or a newer one, refreshed in place when the warm jar holds an older one.
func (e *execution) prepareState(tab context.Context) error {
	t, bc := e.task, e.bc
	bc.Lock()
	defer bc.Unlock()
	e.state = bc.State
	if t.GetKind() == runnerv1.TaskKind_TASK_KIND_CREATE || bc.Session() == "" {
		return nil
	}
	sealed := sdk.Sealed{Project: t.GetProjectId(), Kind: storagestate.CryptoKind, ID: t.GetSession().GetAuthSessionId()}
	var cipher []byte
	rev := t.GetSession().GetStateRevision()
	switch {
	case len(t.GetCandidateStateCiphertext()) > 0:
		cipher, rev = t.GetCandidateStateCiphertext(), 0
	case rev == 0:
		if e.warm && bc.Revision == 0 && bc.State != nil {
			return nil
		}
		return e.restore(tab, &latchkeyv1.StorageState{}, [32]byte{}, 0)
	case e.warm && bc.Revision >= rev:
		// The jar holds the revision, or a newer one a sibling tab wrote back.
		e.res.BaseStateRevision = bc.Revision
		return nil
	default:
		if e.r.deps.States == nil {
			return sdk.Fail(reasonScript, "this runner cannot read stored states")
		}
		c, got, err := e.r.deps.States.StorageState(e.base, t.GetProjectId(), t.GetSession().GetAuthSessionId(), rev)
		if errors.Is(err, sdk.ErrRevisionGone) {
			// Write-backs moved past the task's revision while it waited: use the newest.
			c, got, err = e.r.deps.States.StorageState(e.base, t.GetProjectId(), t.GetSession().GetAuthSessionId(), 0)
		}
		if err != nil {
			return err
		}
		cipher, rev = c, got
		e.res.BaseStateRevision = got
	}
	digest := digestOf(cipher)
	if e.warm && bc.State != nil && bc.Digest == digest {
		// The newer revision is the state this context wrote back: nothing to restore.
		bc.Revision = rev
		return nil
	}
	if e.r.deps.Vault == nil {
		return sdk.Fail(reasonScript, "this runner cannot open stored states")
	}
	plain, err := e.r.deps.Vault.Open(e.base, sealed, cipher, t.GetRunId())
	if err != nil {
		return err
	}
	st, err := storagestate.Unmarshal(plain)
	if err != nil {
		return sdk.Fail(reasonScript, "the stored state cannot be read: %v", err)
	}
	return e.restore(tab, st, digest, rev)
}

// restore writes st into the context and remembers it.
func (e *execution) restore(tab context.Context, st *latchkeyv1.StorageState, digest [32]byte, rev int64) error {
	ctx, span := e.r.tracer.Start(tab, "restore state")
	defer span.End()
	span.SetAttributes(attribute.Bool("latchkey.warm_context", e.warm), attribute.Int("latchkey.cookies", len(st.GetCookies())),
		attribute.Int("latchkey.origins", len(st.GetOrigins())))
	// A warm jar is cleared first, unless another of its tabs is at work: then the
	// state is laid over what it holds, so that task keeps its cookies.
	clear := e.warm && e.bc.Siblings(e.r.pool) == 0
	span.SetAttributes(attribute.Bool("latchkey.cleared", clear))
	if err := e.bc.Restore(ctx, st, clear); err != nil {
		span.SetStatus(codes.Error, "restore failed")
		return e.BrowserError(tab, err)
	}
	chrome.Normalize(st)
	e.bc.State, e.bc.Digest, e.bc.Revision, e.bc.Stored = st, digest, rev, nil
	e.state = st
	e.bc.TakeVisited()
	return nil
}

// digestOf is the digest by which a context remembers which sealed state it holds.
func digestOf(ciphertext []byte) [32]byte { return sha256.Sum256(ciphertext) }
