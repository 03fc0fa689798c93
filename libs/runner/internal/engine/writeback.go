package engine

import (
	"context"
	"errors"

	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
	"github.com/latchkey/latchkey/libs/storagestate"
)

// maxMergeRounds bounds write-back retries when other Runs keep writing.
const maxMergeRounds = 4

// writeBack stores the captured state as the session's next revision, with
// compare-and-swap on the revision the task started from. Only when another Run wrote
// meanwhile does it read that revision, merge cookie-wise (storagestate.Merge, from the
// state the task started from) and try again. It reports false when it did not store
// (no writer, a create or a candidate check, or trouble), and the scheduler stores the
// ciphertext from the result instead.
func (e *execution) writeBack(ctx context.Context, mine *latchkeyv1.StorageState, sealed []byte) (int64, []byte, *latchkeyv1.StorageState, bool) {
	t := e.task
	w, ok := e.r.deps.States.(sdk.StateWriter)
	base := e.res.GetBaseStateRevision()
	if !ok || t.GetKind() == runnerv1.TaskKind_TASK_KIND_CREATE || len(t.GetCandidateStateCiphertext()) > 0 || base == 0 {
		return 0, nil, nil, false
	}
	stored := mine
	project, session := t.GetProjectId(), t.GetSession().GetAuthSessionId()
	for range maxMergeRounds {
		rev, err := w.PutStorageState(ctx, project, session, sealed, base)
		if err == nil {
			e.res.BaseStateRevision = rev
			return rev, sealed, stored, true
		}
		if !errors.Is(err, sdk.ErrStateConflict) {
			e.r.log.WarnContext(ctx, "state write-back failed; the scheduler will store it", "task_id", t.GetTaskId(), "error", err)
			return 0, nil, nil, false
		}
		cipher, newest, err := e.r.deps.States.StorageState(ctx, project, session, 0)
		if err != nil {
			return 0, nil, nil, false
		}
		plain, err := e.r.deps.Vault.Open(ctx, sdk.Sealed{Project: project, Kind: storagestate.CryptoKind, ID: session}, cipher, t.GetRunId())
		if err != nil {
			return 0, nil, nil, false
		}
		current, err := storagestate.Unmarshal(plain)
		if err != nil {
			return 0, nil, nil, false
		}
		stored = storagestate.Merge(e.state, current, mine)
		merged, err := storagestate.Marshal(stored)
		if err != nil {
			return 0, nil, nil, false
		}
		if sealed, err = e.seal(ctx, merged); err != nil {
			return 0, nil, nil, false
		}
		base = newest
	}
	return 0, nil, nil, false
}
