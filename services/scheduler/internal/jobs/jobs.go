// Package jobs runs Jobs: schedules (cron, interval, once) and on-demand batches of
// payloads, each firing a JobRun whose child Runs go through the normal Run path
// (DESIGN.md section 1). Job and JobRun records live in the LK_JOBS KV bucket and every
// change is a compare-and-swap, so any number of scheduler replicas share the work and
// a restarted scheduler carries on: firing is a compare-and-swap on the Job record that
// advances next_fire_time, so exactly one replica fires each due Job; a JobRun's
// children are allotted by compare-and-swap on the JobRun record; the end of a child
// Run comes from the orchestrator's RunEnded hook, or, when the scheduler died before
// calling it, from the reconciliation in Tick reading the child's Run record.
package jobs

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/latchkey/latchkey/libs/bus"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// Limits of Jobs, answered with InvalidArgument by the API when exceeded.
const (
	// MaxPayloads caps the payloads of one Job (one Run each per firing).
	MaxPayloads = 1000
	// MaxPayloadsBytes caps the encoded size of all payloads of a Job: the Job and each
	// JobRun (which copies them) are one KV value each.
	MaxPayloadsBytes = 512 << 10
	// MaxConcurrency caps the Runs of one firing that may run at once.
	MaxConcurrency = 100
	// KeepJobRuns is how many ended JobRuns are kept per Job; older ones are deleted
	// when a JobRun ends.
	KeepJobRuns = 100
)

// Errors of the engine, besides the store's.
var (
	// ErrCompleted is returned by Pause and Resume for a COMPLETED once-Job.
	ErrCompleted = errors.New("job is completed")
)

// BusyError is returned by Trigger while the Job has a JobRun that has not ended.
type BusyError struct{ JobRunID string }

func (e *BusyError) Error() string { return "job has a running job run " + e.JobRunID }

// Runs is what the engine needs of the scheduler's Run path.
type Runs interface {
	// StartChild validates and queues a Run named runID as StartRun does, marked as a
	// child of jobRunID. A refusal is recorded as an ended Run, so the JobRun's Runs all
	// show in ListRuns, and returned: errors.Is orch.ErrSessionExpired when the session
	// is EXPIRED (the child is canceled, the firing stops and the Job is paused); any
	// other user error (errs.IsUser: the API is no longer deployed, the session was
	// deleted) means the child was refused for good and counts as failed.
	StartChild(ctx context.Context, project string, req *latchkeyv1.StartRunRequest, runID, jobRunID string) error
	// RunState returns the state of a Run; found is false when it has no record.
	RunState(ctx context.Context, project, runID string) (state latchkeyv1.RunState, found bool, err error)
	// Cancel cancels a Run that has not ended.
	Cancel(ctx context.Context, project, runID string) error
}

// Engine fires Jobs and drives their JobRuns.
type Engine struct {
	store  *Store
	runs   Runs
	js     jetstream.JetStream
	tracer trace.Tracer
	log    *slog.Logger
	prop   propagation.TextMapPropagator
	now    func() time.Time
	// stuckAfter is how long a running JobRun may go unchanged before Tick reads its
	// children's Run records (a lost run event); restartAfter is how long an allotted
	// child may have no Run record before it is started again (a replica died between
	// allotting and starting it).
	stuckAfter, restartAfter time.Duration
	onEvent                  func(context.Context, string, latchkeyv1.FailureReason)

	mu            sync.Mutex // guards lastHousekeep
	lastHousekeep time.Time
}

// Options tune the engine; zero values take the defaults.
type Options struct {
	// StuckAfter defaults to 10 s, RestartAfter to 30 s.
	StuckAfter, RestartAfter time.Duration
	// OnEvent, if set, is told each job event as it is emitted ("fired", "paused", ...;
	// see emit), with the reason of a pause. It must not block.
	OnEvent func(ctx context.Context, event string, reason latchkeyv1.FailureReason)
}

// New returns an engine over the LK_JOBS store, starting child Runs through runs and
// publishing job events on js.
func New(store *Store, runs Runs, js jetstream.JetStream, tracer trace.Tracer, log *slog.Logger, opts Options) *Engine {
	if opts.StuckAfter <= 0 {
		opts.StuckAfter = 10 * time.Second
	}
	if opts.RestartAfter <= 0 {
		opts.RestartAfter = 30 * time.Second
	}
	return &Engine{
		store: store, runs: runs, js: js, tracer: tracer, log: log, prop: bus.Propagator(), now: time.Now,
		stuckAfter: opts.StuckAfter, restartAfter: opts.RestartAfter, onEvent: opts.OnEvent,
	}
}

// Store returns the engine's record store, for reads.
func (e *Engine) Store() *Store { return e.store }

// JobRunEnded reports whether a JobRun state is final.
func JobRunEnded(s latchkeyv1.JobRunState) bool {
	return s != latchkeyv1.JobRunState_JOB_RUN_STATE_RUNNING && s != latchkeyv1.JobRunState_JOB_RUN_STATE_UNSPECIFIED
}
