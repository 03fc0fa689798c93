package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/errs"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/storagestate"
)

// MaxCiphertextBytes is the largest sealed state accepted: the plaintext limit of
// libs/storagestate plus room for the vault's envelope.
const MaxCiphertextBytes = storagestate.MaxBytes + 64<<10

// PutOptions qualify a PutState.
type PutOptions struct {
	// Base is the revision the writer started from; 0 when it expects none.
	Base int64
	// KnownGood keeps the new revision as the last known-good one (it passed check).
	KnownGood bool
	// Ready moves a PENDING or EXPIRED session to READY in the same write (an import).
	Ready bool
	// RunID is the Run that wrote the state, for the event.
	RunID string
}

func findRef(rec *registryv1.SessionRecord, revision int64) *registryv1.StateRef {
	for _, r := range rec.GetStates() {
		if r.GetRevision() == revision {
			return r
		}
	}
	return nil
}

// GetState returns a stored ciphertext and its revision; revision 0 means the newest.
// The ciphertext is served from the cache when it is there.
func (s *Store) GetState(ctx context.Context, projectID, id string, revision int64) ([]byte, int64, error) {
	if revision < 0 {
		return nil, 0, errs.New(errs.ErrInvalid, "revision must be positive, or 0 for the newest")
	}
	// A concurrent write may prune the revision between reading the record and the
	// blob: read the record again once before giving up.
	for attempt := 0; ; attempt++ {
		sess, err := s.GetSession(ctx, projectID, id)
		if err != nil {
			return nil, 0, err
		}
		rev := revision
		if rev == 0 {
			rev = sess.Rec.GetSession().GetStateRevision()
		}
		if rev == 0 {
			return nil, 0, errs.New(errs.ErrNotFound, "auth session %q has no storage state yet", id)
		}
		ref := findRef(sess.Rec, rev)
		if ref == nil {
			return nil, 0, errs.New(errs.ErrNotFound, "auth session %q has no storage state revision %d (only the newest %d and the last known-good one are kept)", id, rev, s.opts.KeepRevisions)
		}
		ct, err := s.readBlob(ctx, ref)
		if errors.Is(err, errBlobGone) && attempt == 0 {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		return ct, rev, nil
	}
}

var errBlobGone = errors.New("state blob gone")

func cacheKey(blobKey string) string { return "state:" + blobKey }

func (s *Store) readBlob(ctx context.Context, ref *registryv1.StateRef) ([]byte, error) {
	if ct, err := s.cache.Get(ctx, cacheKey(ref.GetBlobKey())); err == nil {
		return ct, nil
	}
	var ct []byte
	if ref.GetInObjectStore() {
		b, err := s.objects.GetBytes(ctx, ref.GetBlobKey())
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, errBlobGone
		}
		if err != nil {
			return nil, fmt.Errorf("reading state object: %w", err)
		}
		ct = b
	} else {
		e, err := s.states.Get(ctx, ref.GetBlobKey())
		if isNotFound(err) {
			return nil, errBlobGone
		}
		if err != nil {
			return nil, fmt.Errorf("reading state: %w", err)
		}
		ct = e.Value()
	}
	_ = s.cache.Set(ctx, cacheKey(ref.GetBlobKey()), ct, s.opts.StateCacheTTL)
	return ct, nil
}

// PutState stores ciphertext as the session's next revision if opts.Base is still its
// newest (compare-and-swap) and returns the new revision. A stale base answers
// ErrStale: the writer reads the newest state, merges (storagestate.Merge) and tries
// again. The newest KeepRevisions revisions and the last known-good one are kept;
// older ones are deleted.
func (s *Store) PutState(ctx context.Context, projectID, id string, ciphertext []byte, opts PutOptions) (int64, error) {
	if len(ciphertext) == 0 {
		return 0, errs.New(errs.ErrInvalid, "ciphertext is empty: seal the state with the vault first")
	}
	if len(ciphertext) > MaxCiphertextBytes {
		return 0, errs.New(errs.ErrTooLarge, "the sealed state is %d bytes, at most %d are accepted (storage states are limited to %d bytes)", len(ciphertext), MaxCiphertextBytes, storagestate.MaxBytes)
	}
	if opts.Base < 0 {
		return 0, errs.New(errs.ErrInvalid, "base_revision must not be negative")
	}
	sess, err := s.GetSession(ctx, projectID, id)
	if err != nil {
		return 0, err
	}
	if cur := sess.Rec.GetSession().GetStateRevision(); cur != opts.Base {
		return 0, staleState(id, opts.Base, cur)
	}
	ref, err := s.writeBlob(ctx, projectID, id, opts.Base+1, ciphertext)
	if err != nil {
		return 0, err
	}
	from := sess.Rec.GetSession().GetState()
	var pruned []*registryv1.StateRef
	committed, err := s.UpdateSession(ctx, projectID, id, 0, func(rec *registryv1.SessionRecord) error {
		a := rec.GetSession()
		if a.GetStateRevision() != opts.Base {
			return staleState(id, opts.Base, a.GetStateRevision())
		}
		from = a.GetState()
		a.StateRevision = ref.GetRevision()
		if opts.KnownGood {
			rec.KnownGoodRevision = ref.GetRevision()
		}
		if opts.Ready && (from == pending || from == expired) {
			a.State, a.StateReason, a.StateMessage = ready, 0, ""
		}
		rec.States, pruned = retain(append(rec.GetStates(), ref), rec.GetKnownGoodRevision(), s.opts.KeepRevisions)
		return nil
	})
	if err != nil {
		// A KV update can be stored by the server and still fail at the client (a
		// canceled call, a reconnect): delete the blob only once the session is known
		// not to hold it. Left behind when unsure, it costs space; deleted under its
		// session, it would lose the state for good.
		now, gerr := s.GetSession(context.WithoutCancel(ctx), projectID, id)
		switch {
		case gerr == nil && holdsRef(now, ref):
			committed, err = now, nil
		case gerr == nil || errors.Is(gerr, errs.ErrNotFound):
			s.deleteBlob(context.WithoutCancel(ctx), ref)
			return 0, err
		default:
			return 0, err
		}
		ctx = context.WithoutCancel(ctx)
	}
	_ = s.cache.Set(ctx, cacheKey(ref.GetBlobKey()), ciphertext, s.opts.StateCacheTTL)
	for _, p := range pruned {
		s.deleteBlob(context.WithoutCancel(ctx), p)
	}
	s.publishStateWritten(ctx, committed, from, opts.RunID)
	return ref.GetRevision(), nil
}

// holdsRef reports whether the session's revisions include ref's blob.
func holdsRef(sess Session, ref *registryv1.StateRef) bool {
	for _, r := range sess.Rec.GetStates() {
		if r.GetBlobKey() == ref.GetBlobKey() {
			return true
		}
	}
	return false
}

func (s *Store) publishStateWritten(ctx context.Context, sess Session, from latchkeyv1.SessionState, runID string) {
	a := sess.Rec.GetSession()
	s.publish(ctx, sess.Etag, &eventsv1.SessionEvent{
		ProjectId: a.GetProjectId(), AuthSessionId: a.GetId(), Type: eventsv1.SessionEventType_SESSION_EVENT_TYPE_STATE_WRITTEN,
		ToState: a.GetState(), StateRevision: a.GetStateRevision(), RunId: runID,
	})
	if a.GetState() == ready && from != ready {
		s.publish(ctx, sess.Etag, &eventsv1.SessionEvent{
			ProjectId: a.GetProjectId(), AuthSessionId: a.GetId(), Type: eventsv1.SessionEventType_SESSION_EVENT_TYPE_READY,
			ToState: ready, StateRevision: a.GetStateRevision(), RunId: runID, Message: "a storage state was imported",
		})
	}
}

func staleState(id string, base, cur int64) error {
	return errs.New(errs.ErrStale, "auth session %q: base revision %d is stale, the newest storage state is revision %d; read it, merge and retry", id, base, cur)
}

// retain keeps the newest keep refs and the known-good one, oldest first, and returns
// the others.
func retain(refs []*registryv1.StateRef, knownGood int64, keep int) (kept, dropped []*registryv1.StateRef) {
	for i, r := range refs {
		if i >= len(refs)-keep || r.GetRevision() == knownGood {
			kept = append(kept, r)
		} else {
			dropped = append(dropped, r)
		}
	}
	return kept, dropped
}

// writeBlob stores a ciphertext under a new unique key, inline or in the object store.
func (s *Store) writeBlob(ctx context.Context, projectID, id string, revision int64, ct []byte) (*registryv1.StateRef, error) {
	ref := &registryv1.StateRef{
		Revision: revision, BlobKey: projectID + "." + id + ".r" + strconv.FormatInt(revision, 10) + "-" + randomID(10),
		Size: int64(len(ct)), InObjectStore: len(ct) > s.opts.InlineMaxBytes, CreateTime: timestamppb.New(s.opts.Now()),
	}
	if ref.GetInObjectStore() {
		if _, err := s.objects.Put(ctx, jetstream.ObjectMeta{Name: ref.GetBlobKey()}, bytes.NewReader(ct)); err != nil {
			return nil, fmt.Errorf("storing state object: %w", err)
		}
		return ref, nil
	}
	if _, err := s.states.Create(ctx, ref.GetBlobKey(), ct); err != nil {
		return nil, fmt.Errorf("storing state: %w", err)
	}
	return ref, nil
}

func (s *Store) deleteBlob(ctx context.Context, ref *registryv1.StateRef) {
	var err error
	if ref.GetInObjectStore() {
		err = s.objects.Delete(ctx, ref.GetBlobKey())
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			err = nil
		}
	} else {
		err = s.states.Purge(ctx, ref.GetBlobKey())
	}
	_ = s.cache.Delete(ctx, cacheKey(ref.GetBlobKey()))
	if err != nil {
		s.log.WarnContext(ctx, "old storage state not deleted", "blob", ref.GetBlobKey(), "error", err)
	}
}

// dropStates deletes every stored state of a session, referenced or orphaned.
func (s *Store) dropStates(ctx context.Context, projectID, id string, refs []*registryv1.StateRef) {
	for _, r := range refs {
		s.deleteBlob(ctx, r)
	}
	prefix := projectID + "." + id + "."
	keys, err := liveKeys(ctx, s.states, prefix+"*")
	if err == nil {
		for _, k := range keys {
			err = errors.Join(err, s.states.Purge(ctx, k))
		}
	}
	err = errors.Join(err, s.purgeObjects(ctx, prefix))
	if err != nil {
		s.log.WarnContext(ctx, "storage states of a deleted session not all deleted", "auth_session_id", id, "error", err)
	}
}

// purgeObjects deletes the objects of LK_STATES_OBJ whose names start with prefix.
func (s *Store) purgeObjects(ctx context.Context, prefix string) error {
	infos, err := s.objects.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing state objects: %w", err)
	}
	for _, info := range infos {
		if strings.HasPrefix(info.Name, prefix) {
			if err := s.objects.Delete(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
				return fmt.Errorf("deleting state object: %w", err)
			}
		}
	}
	return nil
}
