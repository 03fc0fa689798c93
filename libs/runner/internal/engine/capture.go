package engine

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/runner/internal/chrome"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
	"github.com/latchkey/latchkey/libs/storagestate"
)

// captureState reads the context's state and, when it changed, seals it for the
// result.
func (e *execution) captureState(tab context.Context) error {
	bc := e.bc
	if bc == nil || bc.Session() == "" {
		return nil
	}
	ctx, span := e.r.tracer.Start(tab, "capture state")
	defer span.End()
	// One capture and write-back at a time per jar, each from what the jar holds now:
	// a sibling tab may have written back since this task began, and the jar's cookies
	// (rotated by the site) are newer than that revision's.
	bc.Lock()
	defer bc.Unlock()
	if bc.Revision > e.res.GetBaseStateRevision() {
		e.res.BaseStateRevision = bc.Revision
	}
	if bc.State != nil {
		e.state = bc.State
	}
	visited := bc.TakeVisited()
	slices.Sort(visited)
	e.res.Origins = visited
	st, err := bc.Capture(ctx, visited)
	if err != nil {
		span.SetStatus(codes.Error, "capture failed")
		return e.BrowserError(tab, fmt.Errorf("capturing state: %w", err))
	}
	if t := earliestExpiry(st); !t.IsZero() {
		e.res.EarliestCookieExpiry = timestamppb.New(t)
	}
	if chrome.SameState(st, e.state) {
		span.SetAttributes(attribute.Bool("latchkey.state_changed", false))
		return nil
	}
	span.SetAttributes(attribute.Bool("latchkey.state_changed", true))
	toStore := st
	if bc.Stored != nil && bc.Revision != 0 && e.res.GetBaseStateRevision() == bc.Revision {
		// The revision this task started from also holds another writer's cookies,
		// merged in when this context last wrote back: keep them.
		toStore = storagestate.Merge(e.state, bc.Stored, st)
	}
	plain, err := storagestate.Marshal(toStore)
	if err != nil {
		return sdk.Fail(reasonScript, "the captured state is not storable: %v", err)
	}
	if e.r.deps.Vault == nil {
		bc.State, bc.Revision, bc.Stored = st, 0, nil
		return nil
	}
	sealed, err := e.seal(ctx, plain)
	if err != nil {
		return err
	}
	if rev, final, stored, ok := e.writeBack(ctx, toStore, sealed); ok {
		// Stored by the runner itself; the context holds its own cookies, current for
		// it, even when the stored state merged in another writer's.
		span.SetAttributes(attribute.Int64("latchkey.state_revision", rev))
		bc.State, bc.Revision, bc.Digest, bc.Stored = st, rev, digestOf(final), divergent(stored, st)
		return nil
	}
	e.res.CapturedStateCiphertext = sealed
	bc.State, bc.Revision, bc.Digest, bc.Stored = st, 0, digestOf(sealed), divergent(toStore, st)
	return nil
}

// divergent returns stored when it differs from what the context holds, else nil.
func divergent(stored, held *latchkeyv1.StorageState) *latchkeyv1.StorageState {
	if stored == held || chrome.SameState(stored, held) { // the same value when nothing merged
		return nil
	}
	return stored
}

func (e *execution) seal(ctx context.Context, plain []byte) ([]byte, error) {
	return e.r.deps.Vault.Seal(ctx, sdk.Sealed{Project: e.task.GetProjectId(), Kind: storagestate.CryptoKind, ID: e.task.GetSession().GetAuthSessionId()}, plain)
}

// earliestExpiry is the earliest expiry among the state's auth cookies: persistent
// HttpOnly cookies, or any persistent cookie when there is none of those.
func earliestExpiry(st *latchkeyv1.StorageState) time.Time {
	var auth, any float64
	for _, c := range st.GetCookies() {
		e := c.GetExpires()
		if e <= 0 {
			continue
		}
		if any == 0 || e < any {
			any = e
		}
		if c.GetHttpOnly() && (auth == 0 || e < auth) {
			auth = e
		}
	}
	if auth == 0 {
		auth = any
	}
	if auth == 0 {
		return time.Time{}
	}
	return time.Unix(int64(auth), 0)
}
