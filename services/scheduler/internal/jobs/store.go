package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/bus"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
)

// Errors of the store.
var (
	// ErrJobNotFound is returned for a Job that does not exist in the project.
	ErrJobNotFound = errors.New("job not found")
	// ErrJobRunNotFound is returned for a JobRun that does not exist in the project.
	ErrJobRunNotFound = errors.New("job run not found")
	// ErrJobExists is returned when creating a Job whose id is taken.
	ErrJobExists = errors.New("job exists")
	// errNoChange, returned by an update function, leaves the record as it is.
	errNoChange = bus.ErrNoChange
)

// Keys in LK_JOBS. Every key starts with its kind and the project, so a project's
// records never mix with another's and one filter lists them.
func jobKey(project, job string) string            { return "job." + project + "." + job }
func jobRunKey(project, jobRun string) string      { return "jobrun." + project + "." + jobRun }
func jobRunIndexPrefix(project, job string) string { return "jobrunof." + project + "." + job + "." }

// Store keeps Job and JobRun records in LK_JOBS; every change is a compare-and-swap
// on the key's revision.
type Store struct {
	kv jetstream.KeyValue
}

// NewStore returns a store over the LK_JOBS bucket.
func NewStore(kv jetstream.KeyValue) *Store { return &Store{kv: kv} }

// CreateJob stores a new Job; ErrJobExists if its id is taken.
func (s *Store) CreateJob(ctx context.Context, rec *schedulerv1.JobRecord) error {
	rec.UpdateTime = timestamppb.Now()
	b, err := proto.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding job: %w", err)
	}
	if _, err := s.kv.Create(ctx, jobKey(rec.GetJob().GetProjectId(), rec.GetJob().GetId()), b); err != nil {
		if bus.IsConflict(err) {
			return ErrJobExists
		}
		return fmt.Errorf("creating job record: %w", err)
	}
	return nil
}

// GetJob returns a Job record and its revision.
func (s *Store) GetJob(ctx context.Context, project, job string) (*schedulerv1.JobRecord, uint64, error) {
	rec := &schedulerv1.JobRecord{}
	rev, err := s.get(ctx, jobKey(project, job), rec, ErrJobNotFound)
	return rec, rev, err
}

// UpdateJob applies fn to the newest Job record and writes it back with
// compare-and-swap (bus.UpdateProto), re-reading and re-applying fn when another
// writer won. fn returning errNoChange leaves the record as it is.
func (s *Store) UpdateJob(ctx context.Context, project, job string, fn func(*schedulerv1.JobRecord) error) (*schedulerv1.JobRecord, error) {
	rec, _, err := bus.UpdateProto(ctx, s.kv, jobKey(project, job), ErrJobNotFound, func(rec *schedulerv1.JobRecord) error {
		if err := fn(rec); err != nil {
			return err
		}
		rec.UpdateTime = timestamppb.Now()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("updating job %s: %w", job, err)
	}
	return rec, nil
}

// DeleteJob removes a Job record.
func (s *Store) DeleteJob(ctx context.Context, project, job string) error {
	if err := s.kv.Purge(ctx, jobKey(project, job)); err != nil {
		return fmt.Errorf("deleting job record: %w", err)
	}
	return nil
}

// JobIDs lists the Job ids of a project in id order.
func (s *Store) JobIDs(ctx context.Context, project string) ([]string, error) {
	ids, err := s.keys(ctx, "job."+project+".*")
	if err != nil {
		return nil, err
	}
	for i := range ids {
		ids[i] = strings.TrimPrefix(ids[i], "job."+project+".")
	}
	slices.Sort(ids)
	return ids, nil
}

// AllJobs calls fn with every Job record and its revision, all projects, streamed
// through one KV watch.
func (s *Store) AllJobs(ctx context.Context, fn func(rec *schedulerv1.JobRecord, rev uint64)) error {
	return bus.Scan(ctx, s.kv, "job.>", false, func(e jetstream.KeyValueEntry) error {
		rec := &schedulerv1.JobRecord{}
		if proto.Unmarshal(e.Value(), rec) != nil {
			return nil // unreadable: skipped, as a deleted one
		}
		fn(rec, e.Revision())
		return ctx.Err()
	})
}

// CASJob writes rec over revision rev; false when another writer won.
func (s *Store) CASJob(ctx context.Context, rec *schedulerv1.JobRecord, rev uint64) (bool, error) {
	rec.UpdateTime = timestamppb.Now()
	return s.put(ctx, jobKey(rec.GetJob().GetProjectId(), rec.GetJob().GetId()), rec, rev)
}

// CreateJobRun stores a new JobRun and its index key; false when it exists already
// (another replica created it).
func (s *Store) CreateJobRun(ctx context.Context, rec *schedulerv1.JobRunRecord) (bool, error) {
	jr := rec.GetJobRun()
	// The index first: an index key without a record is skipped by listings, a record
	// without its index key would be invisible to ListJobRuns.
	if _, err := s.kv.Put(ctx, jobRunIndexPrefix(jr.GetProjectId(), jr.GetJobId())+jr.GetId(), nil); err != nil {
		return false, fmt.Errorf("indexing job run: %w", err)
	}
	rec.UpdateTime = timestamppb.Now()
	b, err := proto.Marshal(rec)
	if err != nil {
		return false, fmt.Errorf("encoding job run: %w", err)
	}
	if _, err := s.kv.Create(ctx, jobRunKey(jr.GetProjectId(), jr.GetId()), b); err != nil {
		if bus.IsConflict(err) {
			return false, nil
		}
		return false, fmt.Errorf("creating job run record: %w", err)
	}
	return true, nil
}

// GetJobRun returns a JobRun record and its revision.
func (s *Store) GetJobRun(ctx context.Context, project, jobRun string) (*schedulerv1.JobRunRecord, uint64, error) {
	rec := &schedulerv1.JobRunRecord{}
	rev, err := s.get(ctx, jobRunKey(project, jobRun), rec, ErrJobRunNotFound)
	return rec, rev, err
}

// UpdateJobRun is UpdateJob for JobRun records; changed is false when fn returned
// errNoChange.
func (s *Store) UpdateJobRun(ctx context.Context, project, jobRun string, fn func(*schedulerv1.JobRunRecord) error) (rec *schedulerv1.JobRunRecord, changed bool, err error) {
	rec, _, err = bus.UpdateProto(ctx, s.kv, jobRunKey(project, jobRun), ErrJobRunNotFound, func(rec *schedulerv1.JobRunRecord) error {
		changed = false
		if err := fn(rec); err != nil {
			return err
		}
		rec.UpdateTime = timestamppb.Now()
		changed = true
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("updating job run %s: %w", jobRun, err)
	}
	return rec, changed, nil
}

// JobRunIDs lists the JobRun ids of a Job, newest first (ids sort by creation time).
func (s *Store) JobRunIDs(ctx context.Context, project, job string) ([]string, error) {
	prefix := jobRunIndexPrefix(project, job)
	ids, err := s.keys(ctx, prefix+"*")
	if err != nil {
		return nil, err
	}
	for i := range ids {
		ids[i] = strings.TrimPrefix(ids[i], prefix)
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	return ids, nil
}

// DeleteJobRun removes a JobRun record and its index key.
func (s *Store) DeleteJobRun(ctx context.Context, project, job, jobRun string) error {
	if err := s.kv.Purge(ctx, jobRunKey(project, jobRun)); err != nil {
		return fmt.Errorf("deleting job run record: %w", err)
	}
	if err := s.kv.Purge(ctx, jobRunIndexPrefix(project, job)+jobRun); err != nil {
		return fmt.Errorf("deleting job run index: %w", err)
	}
	return nil
}

func (s *Store) get(ctx context.Context, key string, into proto.Message, notFound error) (uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, notFound
	}
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", key, err)
	}
	if err := proto.Unmarshal(e.Value(), into); err != nil {
		return 0, fmt.Errorf("decoding %s: %w", key, err)
	}
	return e.Revision(), nil
}

// put writes m over revision rev, once; false on a conflict (CASJob: a firing is one
// compare-and-swap, and the replica that loses it does not fire).
func (s *Store) put(ctx context.Context, key string, m proto.Message, rev uint64) (bool, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return false, fmt.Errorf("encoding %s: %w", key, err)
	}
	if _, err := s.kv.Update(ctx, key, b, rev); err != nil {
		if bus.IsConflict(err) {
			return false, nil
		}
		return false, fmt.Errorf("writing %s: %w", key, err)
	}
	return true, nil
}

func (s *Store) keys(ctx context.Context, filter string) ([]string, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, filter)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", filter, err)
	}
	var out []string
	for k := range lister.Keys() {
		out = append(out, k)
	}
	return out, nil
}
