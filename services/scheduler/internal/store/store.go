// Package store keeps the scheduler's Run records in the LK_RUNS KV bucket. Every
// update is a compare-and-swap on the key's revision, so scheduler replicas can share
// Runs without locks; nothing about a Run lives only in memory.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/bus"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
)

// Errors of the store.
var (
	// ErrNotFound is returned for a Run that does not exist.
	ErrNotFound = errors.New("run not found")
	// ErrNoChange, returned by an update function, leaves the record as it is.
	ErrNoChange = bus.ErrNoChange
)

// Store is the Run record store.
type Store struct {
	kv  jetstream.KeyValue
	now func() *timestamppb.Timestamp
}

// New returns a store over the LK_RUNS bucket.
func New(kv jetstream.KeyValue) *Store {
	return &Store{kv: kv, now: timestamppb.Now}
}

func runKey(project, run string) string { return bus.RunRecordKey(project, run) }

func waitKey(project, session, run string) string {
	return "wait." + project + "." + session + "." + run
}

// Create stores a new record; it fails if the Run exists.
func (s *Store) Create(ctx context.Context, rec *schedulerv1.RunRecord) error {
	rec.UpdateTime = s.now()
	b, err := proto.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding run: %w", err)
	}
	if _, err := s.kv.Create(ctx, runKey(rec.GetRun().GetProjectId(), rec.GetRun().GetId()), b); err != nil {
		return fmt.Errorf("creating run record: %w", err)
	}
	return nil
}

// Get returns a record and its revision.
func (s *Store) Get(ctx context.Context, project, run string) (*schedulerv1.RunRecord, uint64, error) {
	e, err := s.kv.Get(ctx, runKey(project, run))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading run record: %w", err)
	}
	rec := &schedulerv1.RunRecord{}
	if err := proto.Unmarshal(e.Value(), rec); err != nil {
		return nil, 0, fmt.Errorf("decoding run record: %w", err)
	}
	return rec, e.Revision(), nil
}

// Update applies fn to the newest record and writes it back with compare-and-swap
// (bus.UpdateProto), re-reading and re-applying fn when another writer won. fn
// returning ErrNoChange leaves the record unchanged and Update returns it with a nil
// error.
func (s *Store) Update(ctx context.Context, project, run string, fn func(*schedulerv1.RunRecord) error) (*schedulerv1.RunRecord, error) {
	rec, _, err := bus.UpdateProto(ctx, s.kv, runKey(project, run), ErrNotFound, func(rec *schedulerv1.RunRecord) error {
		if err := fn(rec); err != nil {
			return err
		}
		rec.UpdateTime = s.now()
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("updating run %s: %w", run, err)
	}
	return rec, err
}

// Keys lists the Run ids of a project, newest first (ids sort by creation time).
func (s *Store) Keys(ctx context.Context, project string) ([]string, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, "run."+project+".*")
	if err != nil {
		return nil, fmt.Errorf("listing runs: %w", err)
	}
	var ids []string
	for k := range lister.Keys() {
		ids = append(ids, strings.TrimPrefix(k, "run."+project+"."))
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	return ids, nil
}

// AllActive calls fn for every record that has not ended, across projects (the
// recovery sweep). One KV watch streams the newest value of every key, rather than
// a listing and a read per key.
func (s *Store) AllActive(ctx context.Context, fn func(*schedulerv1.RunRecord)) error {
	return bus.Scan(ctx, s.kv, "run.>", false, func(e jetstream.KeyValueEntry) error {
		rec := &schedulerv1.RunRecord{}
		if proto.Unmarshal(e.Value(), rec) == nil && rec.GetStage() != schedulerv1.Stage_STAGE_DONE {
			fn(rec)
		}
		return nil
	})
}

// ClaimIdempotencyKey records that key started run in project. When the key was used
// before it returns the earlier Run's id and false.
func (s *Store) ClaimIdempotencyKey(ctx context.Context, project, key, run string) (string, bool, error) {
	sum := sha256.Sum256([]byte(key))
	k := "idem." + project + "." + hex.EncodeToString(sum[:16])
	if _, err := s.kv.Create(ctx, k, []byte(run)); err == nil {
		return run, true, nil
	} else if !bus.IsConflict(err) {
		return "", false, fmt.Errorf("recording idempotency key: %w", err)
	}
	e, err := s.kv.Get(ctx, k)
	if err != nil {
		return "", false, fmt.Errorf("reading idempotency key: %w", err)
	}
	return string(e.Value()), false, nil
}

// ErrKeyBeingClaimed is TakeOverIdempotencyKey's answer for a claim too young to be
// an orphan: its Run may be being stored right now.
var ErrKeyBeingClaimed = errors.New("a Run with this idempotency key is being started")

// TakeOverIdempotencyKey moves a key claimed for run from, which has no record, to
// run to — when the claim is older than orphanAfter, so its claimer is not merely
// about to store it (a claimer that died, or whose store failed after the claim
// landed). Compare-and-swap on the claim: of two takers, one wins.
func (s *Store) TakeOverIdempotencyKey(ctx context.Context, project, key, from, to string, orphanAfter time.Duration) error {
	sum := sha256.Sum256([]byte(key))
	k := "idem." + project + "." + hex.EncodeToString(sum[:16])
	e, err := s.kv.Get(ctx, k)
	if err != nil {
		return fmt.Errorf("reading idempotency key: %w", err)
	}
	if string(e.Value()) != from || s.now().AsTime().Sub(e.Created()) < orphanAfter {
		return ErrKeyBeingClaimed
	}
	if _, err := s.kv.Update(ctx, k, []byte(to), e.Revision()); err != nil {
		if bus.IsConflict(err) {
			return ErrKeyBeingClaimed
		}
		return fmt.Errorf("taking over idempotency key: %w", err)
	}
	return nil
}

// ReleaseIdempotencyKey forgets a key whose Run could not be started.
func (s *Store) ReleaseIdempotencyKey(ctx context.Context, project, key string) {
	sum := sha256.Sum256([]byte(key))
	_ = s.kv.Delete(ctx, "idem."+project+"."+hex.EncodeToString(sum[:16]))
}

// AddWaiter records that run waits for session to be logged in again.
func (s *Store) AddWaiter(ctx context.Context, project, session, run string) error {
	if _, err := s.kv.Put(ctx, waitKey(project, session, run), []byte(run)); err != nil {
		return fmt.Errorf("recording waiter: %w", err)
	}
	return nil
}

// TakeWaiters removes and returns the Runs waiting for a session. Each waiter is
// returned to exactly one caller, however many replicas take at once.
func (s *Store) TakeWaiters(ctx context.Context, project, session string) ([]string, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, "wait."+project+"."+session+".*")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing waiters: %w", err)
	}
	var runs []string
	for k := range lister.Keys() {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		// Purge with the revision we read: only one taker wins each waiter.
		if err := s.kv.Purge(ctx, k, jetstream.LastRevision(e.Revision())); err != nil {
			continue
		}
		runs = append(runs, string(e.Value()))
	}
	return runs, nil
}
