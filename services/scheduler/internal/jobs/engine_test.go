package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/domain"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/testkit"
	"github.com/latchkey/latchkey/services/scheduler/internal/orch"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testkit.LibraryGoroutines()...) }

// runBook stands in for the scheduler's Run path: it records the child Runs it was
// asked to start, and the test ends them. The engine's own logic (allotting,
// counting, stopping, reconciling) runs against real JetStream KV.
type runBook struct {
	mu      sync.Mutex
	runs    map[string]latchkeyv1.RunState
	params  map[string]*structpb.Struct
	jobRun  map[string]string
	order   []string
	expired bool // StartChild answers ErrSessionExpired
	lose    bool // StartChild fails as if the replica died before starting the Run
}

func newRunBook() *runBook {
	return &runBook{runs: map[string]latchkeyv1.RunState{}, params: map[string]*structpb.Struct{}, jobRun: map[string]string{}}
}

func (b *runBook) StartChild(_ context.Context, _ string, req *latchkeyv1.StartRunRequest, runID, jobRunID string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.expired:
		return orch.ErrSessionExpired
	case b.lose:
		return fmt.Errorf("connection lost")
	}
	if _, ok := b.runs[runID]; ok {
		return fmt.Errorf("run %s started twice", runID)
	}
	b.runs[runID], b.params[runID], b.jobRun[runID] = latchkeyv1.RunState_RUN_STATE_RUNNING, req.GetParams(), jobRunID
	b.order = append(b.order, runID)
	return nil
}

func (b *runBook) RunState(_ context.Context, _, runID string) (latchkeyv1.RunState, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.runs[runID]
	return s, ok, nil
}

func (b *runBook) Cancel(_ context.Context, _, runID string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.runs[runID]; ok {
		b.runs[runID] = latchkeyv1.RunState_RUN_STATE_CANCELED
	}
	return nil
}

// running returns the Runs not ended, in start order.
func (b *runBook) running() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, id := range b.order {
		if !domain.RunEnded(b.runs[id]) {
			out = append(out, id)
		}
	}
	return out
}

// end ends a Run; with tell, the engine hears of it as from the orchestrator's hook.
func (b *runBook) end(t *testing.T, e *Engine, id string, s latchkeyv1.RunState, tell bool) {
	t.Helper()
	b.mu.Lock()
	b.runs[id] = s
	jobRun := b.jobRun[id]
	b.mu.Unlock()
	if tell {
		e.RunEnded(t.Context(), &latchkeyv1.Run{Id: id, ProjectId: "acme", JobRunId: jobRun, State: s})
	}
}

func newEngine(t *testing.T, runs Runs) (*Engine, *Store) {
	t.Helper()
	_, _, js := testkit.NATS(t)
	kv, err := js.KeyValue(t.Context(), bus.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	st := NewStore(kv)
	return New(st, runs, js, noop.NewTracerProvider().Tracer(""), slog.New(slog.DiscardHandler), Options{}), st
}

func batch(id string, n int, concurrency int32) *latchkeyv1.Job {
	j := &latchkeyv1.Job{Id: id, ProjectId: "acme", Api: "echo", AuthSessionId: "s1", MaxConcurrency: concurrency, State: latchkeyv1.JobState_JOB_STATE_ACTIVE}
	for i := range n {
		j.Payloads = append(j.Payloads, &structpb.Struct{Fields: map[string]*structpb.Value{"i": structpb.NewNumberValue(float64(i))}})
	}
	return j
}

func getJobRun(t *testing.T, st *Store, id string) *latchkeyv1.JobRun {
	t.Helper()
	rec, _, err := st.GetJobRun(t.Context(), "acme", id)
	if err != nil {
		t.Fatal(err)
	}
	return rec.GetJobRun()
}

func TestBatchStartsNoMoreThanMaxConcurrencyAndCountsEveryEnd(t *testing.T) {
	book := newRunBook()
	e, st := newEngine(t, book)
	if _, err := e.Create(t.Context(), batch("b", 5, 2)); err != nil {
		t.Fatal(err)
	}
	jr, err := e.Trigger(t.Context(), "acme", "b")
	if err != nil {
		t.Fatal(err)
	}
	states := []latchkeyv1.RunState{latchkeyv1.RunState_RUN_STATE_SUCCEEDED, latchkeyv1.RunState_RUN_STATE_FAILED, latchkeyv1.RunState_RUN_STATE_SUCCEEDED, latchkeyv1.RunState_RUN_STATE_CANCELED, latchkeyv1.RunState_RUN_STATE_SUCCEEDED}
	for i := range 5 {
		running := book.running()
		if want := min(2, 5-i); len(running) != want {
			t.Fatalf("after %d ends: %d Runs running, want %d", i, len(running), want)
		}
		book.end(t, e, running[0], states[i], true)
	}
	got := getJobRun(t, st, jr.GetId())
	if got.GetState() != latchkeyv1.JobRunState_JOB_RUN_STATE_FAILED || got.GetRunsSucceeded() != 3 || got.GetRunsFailed() != 1 || got.GetRunsCanceled() != 1 {
		t.Fatalf("job run = %v, want FAILED 3/1/1", got)
	}
	for i, id := range book.order {
		if p := book.params[id].GetFields()["i"].GetNumberValue(); int(p) != i {
			t.Errorf("Run %d got payload %v", i, p)
		}
	}
	rec, _, _ := st.GetJob(t.Context(), "acme", "b")
	if rec.GetActiveJobRunId() != "" || rec.GetJob().GetState() != latchkeyv1.JobState_JOB_STATE_ACTIVE {
		t.Errorf("job after its batch = %v, want ACTIVE and free to fire again", rec)
	}
}

// TestSessionDeletionPausesOnlyItsJobs: deleting a session pauses the Jobs that used
// it, as its expiry does, and leaves other sessions' Jobs alone; a session written
// back (READY to READY) pauses nothing.
func TestSessionDeletionPausesOnlyItsJobs(t *testing.T) {
	e, st := newEngine(t, newRunBook())
	other := batch("other", 1, 1)
	other.AuthSessionId = "s2"
	for _, j := range []*latchkeyv1.Job{batch("mine", 1, 1), other} {
		if _, err := e.Create(t.Context(), j); err != nil {
			t.Fatal(err)
		}
	}
	state := func(id string) latchkeyv1.JobState {
		rec, _, err := st.GetJob(t.Context(), "acme", id)
		if err != nil {
			t.Fatal(err)
		}
		return rec.GetJob().GetState()
	}
	written := &eventsv1.SessionEvent{ProjectId: "acme", AuthSessionId: "s1", Type: eventsv1.SessionEventType_SESSION_EVENT_TYPE_STATE_WRITTEN,
		FromState: latchkeyv1.SessionState_SESSION_STATE_READY, ToState: latchkeyv1.SessionState_SESSION_STATE_READY}
	if err := e.HandleSessionEvent(t.Context(), written); err != nil || state("mine") != latchkeyv1.JobState_JOB_STATE_ACTIVE {
		t.Fatalf("after a write-back: %s, %v; want ACTIVE", state("mine"), err)
	}
	deleted := &eventsv1.SessionEvent{ProjectId: "acme", AuthSessionId: "s1", Type: eventsv1.SessionEventType_SESSION_EVENT_TYPE_DELETED,
		FromState: latchkeyv1.SessionState_SESSION_STATE_READY}
	if err := e.HandleSessionEvent(t.Context(), deleted); err != nil {
		t.Fatal(err)
	}
	if state("mine") != latchkeyv1.JobState_JOB_STATE_PAUSED || state("other") != latchkeyv1.JobState_JOB_STATE_ACTIVE {
		t.Fatalf("after deleting s1: mine %s, other %s; want PAUSED and ACTIVE", state("mine"), state("other"))
	}
}

func TestSessionExpiryStopsTheFiringAndPausesTheJob(t *testing.T) {
	book := newRunBook()
	e, st := newEngine(t, book)
	if _, err := e.Create(t.Context(), batch("b", 4, 1)); err != nil {
		t.Fatal(err)
	}
	jr, err := e.Trigger(t.Context(), "acme", "b")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.HandleSessionEvent(t.Context(), &eventsv1.SessionEvent{ProjectId: "acme", AuthSessionId: "s1",
		Type: eventsv1.SessionEventType_SESSION_EVENT_TYPE_EXPIRED, ToState: latchkeyv1.SessionState_SESSION_STATE_EXPIRED}); err != nil {
		t.Fatal(err)
	}
	rec, _, _ := st.GetJob(t.Context(), "acme", "b")
	if rec.GetJob().GetState() != latchkeyv1.JobState_JOB_STATE_PAUSED || rec.GetJob().GetPauseReason() != latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED {
		t.Fatalf("job = %v, want PAUSED AUTH_SESSION_EXPIRED", rec.GetJob())
	}
	running := book.running()
	if len(running) != 1 {
		t.Fatalf("%d Runs running", len(running))
	}
	book.end(t, e, running[0], latchkeyv1.RunState_RUN_STATE_CANCELED, true)
	if len(book.order) != 1 {
		t.Errorf("%d Runs started after the session expired, want none", len(book.order)-1)
	}
	got := getJobRun(t, st, jr.GetId())
	if got.GetState() != latchkeyv1.JobRunState_JOB_RUN_STATE_CANCELED || got.GetRunsCanceled() != 4 {
		t.Fatalf("job run = %v, want CANCELED with all 4 Runs canceled", got)
	}

	// A start that finds the session expired (a missed session event) does the same.
	book.expired = true
	if _, err := e.Create(t.Context(), batch("c", 3, 1)); err != nil {
		t.Fatal(err)
	}
	jr, err = e.Trigger(t.Context(), "acme", "c")
	if err != nil {
		t.Fatal(err)
	}
	if got := getJobRun(t, st, jr.GetId()); got.GetState() != latchkeyv1.JobRunState_JOB_RUN_STATE_CANCELED || got.GetRunsCanceled() != 3 {
		t.Errorf("job run on an expired session = %v, want CANCELED 3", got)
	}
	if rec, _, _ := st.GetJob(t.Context(), "acme", "c"); rec.GetJob().GetPauseReason() != latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED {
		t.Errorf("job = %v, want paused by the expiry", rec.GetJob())
	}
}

// TestTickRepairsLostSteps: a lost end of a Run, a child allotted but never started,
// and a firing whose JobRun was never created are all repaired by Tick.
func TestTickRepairsLostSteps(t *testing.T) {
	book := newRunBook()
	e, st := newEngine(t, book)
	if _, err := e.Create(t.Context(), batch("b", 2, 1)); err != nil {
		t.Fatal(err)
	}
	book.lose = true
	jr, err := e.Trigger(t.Context(), "acme", "b")
	if err != nil {
		t.Fatal(err)
	}
	book.lose = false
	if len(book.order) != 0 {
		t.Fatal("a lost start started a Run")
	}
	// A minute later: past stuckAfter and restartAfter.
	e.now = func() time.Time { return time.Now().Add(time.Minute) }
	if err := e.Tick(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(book.running()) != 1 {
		t.Fatalf("after a tick: %d Runs running, want the lost one started again", len(book.running()))
	}
	book.end(t, e, book.running()[0], latchkeyv1.RunState_RUN_STATE_SUCCEEDED, false) // its end is lost
	if err := e.Tick(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(book.running()) != 1 || len(book.order) != 2 {
		t.Fatalf("after the second tick: %d started, %d running; want the second started", len(book.order), len(book.running()))
	}
	book.end(t, e, book.running()[0], latchkeyv1.RunState_RUN_STATE_SUCCEEDED, false)
	if err := e.Tick(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := getJobRun(t, st, jr.GetId()); got.GetState() != latchkeyv1.JobRunState_JOB_RUN_STATE_SUCCEEDED || got.GetRunsSucceeded() != 2 {
		t.Fatalf("job run = %v, want SUCCEEDED 2", got)
	}

	// A firing recorded on the Job whose JobRun was never created.
	if _, err := st.UpdateJob(t.Context(), "acme", "b", func(r *schedulerv1.JobRecord) error {
		r.ActiveJobRunId = "jobrun-lost"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.Tick(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := getJobRun(t, st, "jobrun-lost"); got.GetRunsTotal() != 2 || len(book.running()) != 1 {
		t.Fatalf("lost firing = %v, %d running", got, len(book.running()))
	}
}

// TestAStoppedFiringEndsWithAChildThatNeverStarted: a child whose start was lost, in a
// firing that was then stopped (its session expired), counts as canceled, so the
// JobRun ends and the Job can fire again once resumed.
func TestAStoppedFiringEndsWithAChildThatNeverStarted(t *testing.T) {
	book := newRunBook()
	e, st := newEngine(t, book)
	if _, err := e.Create(t.Context(), batch("b", 3, 2)); err != nil {
		t.Fatal(err)
	}
	book.lose = true // the first child's start is lost
	jr, err := e.Trigger(t.Context(), "acme", "b")
	if err != nil {
		t.Fatal(err)
	}
	book.lose = false
	expired := &eventsv1.SessionEvent{ProjectId: "acme", AuthSessionId: "s1",
		Type: eventsv1.SessionEventType_SESSION_EVENT_TYPE_EXPIRED, ToState: latchkeyv1.SessionState_SESSION_STATE_EXPIRED}
	if err := e.HandleSessionEvent(t.Context(), expired); err != nil {
		t.Fatal(err)
	}
	for _, id := range book.running() {
		book.end(t, e, id, latchkeyv1.RunState_RUN_STATE_CANCELED, true)
	}
	e.now = func() time.Time { return time.Now().Add(time.Minute) } // past restartAfter
	for range 2 {
		if err := e.Tick(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	got := getJobRun(t, st, jr.GetId())
	if got.GetState() != latchkeyv1.JobRunState_JOB_RUN_STATE_CANCELED || got.GetRunsCanceled() != 3 {
		t.Fatalf("stopped firing = %v, want CANCELED with 3 of 3 canceled", got)
	}
	if rec, _, _ := st.GetJob(t.Context(), "acme", "b"); rec.GetActiveJobRunId() != "" {
		t.Fatalf("the Job still names its ended firing %q", rec.GetActiveJobRunId())
	}
}

// TestReplicasFireEachDueTimeOnce: three engines on one bucket tick at once; each due
// time of an interval Job fires exactly once.
func TestReplicasFireEachDueTimeOnce(t *testing.T) {
	book := newRunBook()
	e, st := newEngine(t, book)
	j := batch("every", 0, 1)
	j.Schedule = &latchkeyv1.Schedule{Schedule: &latchkeyv1.Schedule_Interval{Interval: durationpb.New(time.Hour)}}
	if _, err := e.Create(t.Context(), j); err != nil {
		t.Fatal(err)
	}
	replicas := []*Engine{e, New(st, book, e.js, e.tracer, e.log, Options{}), New(st, book, e.js, e.tracer, e.log, Options{})}
	start := time.Now()
	for hour := 1; hour <= 3; hour++ {
		at := start.Add(time.Duration(hour)*time.Hour + time.Second)
		var wg sync.WaitGroup
		for _, r := range replicas {
			r.now = func() time.Time { return at }
			wg.Go(func() {
				if err := r.Tick(t.Context()); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		running := book.running()
		if len(running) != 1 {
			t.Fatalf("hour %d: %d Runs running, want exactly 1", hour, len(running))
		}
		book.end(t, e, running[0], latchkeyv1.RunState_RUN_STATE_SUCCEEDED, true)
	}
	ids, _ := st.JobRunIDs(t.Context(), "acme", "every")
	if len(book.order) != 3 || len(ids) != 3 {
		t.Fatalf("%d Runs, %d JobRuns over three due times; want 3 and 3", len(book.order), len(ids))
	}
}

// TestDeletedJobRunsLeaveNoMarkersBehind: deleting a Job's JobRuns leaves purge
// markers in LK_JOBS's stream; housekeeping clears them, so a Job firing forever does
// not grow the bucket forever.
func TestDeletedJobRunsLeaveNoMarkersBehind(t *testing.T) {
	book := newRunBook()
	e, _ := newEngine(t, book)
	if _, err := e.Create(t.Context(), batch("b", 1, 1)); err != nil {
		t.Fatal(err)
	}
	jr, err := e.Trigger(t.Context(), "acme", "b")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Delete(t.Context(), "acme", "b"); err != nil {
		t.Fatal(err)
	}
	stream, err := e.js.Stream(t.Context(), "KV_"+bus.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	count := func() uint64 {
		info, err := stream.Info(t.Context(), jetstream.WithSubjectFilter("$KV."+bus.BucketJobs+".>"))
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for subj, c := range info.State.Subjects {
			if strings.Contains(subj, jr.GetId()) {
				n += c
			}
		}
		return n
	}
	if n := count(); n != 2 {
		t.Fatalf("%d messages under the deleted JobRun's keys, want its 2 purge markers", n)
	}
	if err := e.housekeep(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d messages under the deleted JobRun's keys after housekeeping, want 0", n)
	}
}
