package orch

// This file is the white-box harness of the orchestrator's tests: a real embedded
// JetStream (Run records, leases, the task stream), an in-memory registry and vault,
// a fake clock, and a scripted runner that reads the tasks the orchestrator publishes
// and answers them through HandleResult as the scheduler's result consumer would.
// Session events are queued by the fake registry and delivered only when a test says
// so (deliverEvents), so every test is deterministic.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/cache"
	"github.com/latchkey/latchkey/libs/errs"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/testkit"
	"github.com/latchkey/latchkey/services/scheduler/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testkit.LibraryGoroutines()...) }

const (
	testProject = "acme"
	pool        = "test"
	apiName     = "list-invoices"
	sessID      = "s1"
	waitNATS    = 2 * time.Second // the longest any helper waits on NATS
)

// Short names for the enums the tests use most.
const (
	typeCredentials = latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS
	typeRuntime     = latchkeyv1.SessionType_SESSION_TYPE_RUNTIME
	typeRecorder    = latchkeyv1.SessionType_SESSION_TYPE_RECORDER

	sessPending    = latchkeyv1.SessionState_SESSION_STATE_PENDING
	sessReady      = latchkeyv1.SessionState_SESSION_STATE_READY
	sessRecreating = latchkeyv1.SessionState_SESSION_STATE_RECREATING
	sessExpired    = latchkeyv1.SessionState_SESSION_STATE_EXPIRED

	runRunning   = latchkeyv1.RunState_RUN_STATE_RUNNING
	runMoreInfo  = latchkeyv1.RunState_RUN_STATE_REQUESTED_MORE_INFO
	runSucceeded = latchkeyv1.RunState_RUN_STATE_SUCCEEDED
	runFailed    = latchkeyv1.RunState_RUN_STATE_FAILED
	runCanceled  = latchkeyv1.RunState_RUN_STATE_CANCELED

	taskAPI    = runnerv1.TaskKind_TASK_KIND_API
	taskCreate = runnerv1.TaskKind_TASK_KIND_CREATE
	taskCheck  = runnerv1.TaskKind_TASK_KIND_CHECK
	taskRecord = runnerv1.TaskKind_TASK_KIND_RECORD

	statusSucceeded    = runnerv1.TaskStatus_TASK_STATUS_SUCCEEDED
	statusNeedsAuth    = runnerv1.TaskStatus_TASK_STATUS_NEEDS_AUTH
	statusInconclusive = runnerv1.TaskStatus_TASK_STATUS_INCONCLUSIVE
	statusMoreInfo     = runnerv1.TaskStatus_TASK_STATUS_REQUESTED_MORE_INFO

	valid        = latchkeyv1.CheckOutcome_CHECK_OUTCOME_VALID
	invalidState = latchkeyv1.CheckOutcome_CHECK_OUTCOME_INVALID
	inconclusive = latchkeyv1.CheckOutcome_CHECK_OUTCOME_INCONCLUSIVE

	noReason          = latchkeyv1.FailureReason_FAILURE_REASON_UNSPECIFIED
	reasonExpired     = latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED
	reasonTransient   = latchkeyv1.FailureReason_FAILURE_REASON_TRANSIENT
	reasonTimeout     = latchkeyv1.FailureReason_FAILURE_REASON_TIMEOUT
	reasonBadPassword = latchkeyv1.FailureReason_FAILURE_REASON_INVALID_CREDENTIALS
)

// testPolicy has tiny back-offs and budgets and a circuit out of the way; tests that
// exercise a limit lower it.
func testPolicy() Policy {
	return Policy{
		LeaseTTL: time.Minute, TaskTimeout: time.Minute,
		SessionBudget: 100, OriginBudget: 100, BudgetWindow: time.Hour,
		BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond,
		CircuitThreshold: 100, CircuitWindow: 10 * time.Minute,
		PlatformRetries: 3, PlatformBackoffBase: time.Millisecond, PlatformBackoffMax: 5 * time.Millisecond,
		IdempotencyOrphanAfter: time.Minute,
	}
}

// harness is one orchestrator over its own NATS server, registry, vault and clock.
type harness struct {
	t      *testing.T
	o      *Orchestrator
	reg    *fakeRegistry
	vault  *fakeVault
	clock  *testkit.Clock
	cache  *cache.Memory
	runsKV jetstream.KeyValue
	tasks  jetstream.Consumer
	logs   *testkit.SyncBuffer

	taskStream jetstream.Stream
	seenSeq    uint64            // the stream sequence of the last task taken
	loginLane  string            // the pool's login lane subject
	lanes      map[string]string // task id -> the subject it came on
}

// newHarness starts a harness; edit adjusts the test policy.
func newHarness(t *testing.T, edit ...func(*Policy)) *harness {
	t.Helper()
	ctx := t.Context()
	_, nc, js := testkit.NATS(t)
	runsKV, err := js.KeyValue(ctx, bus.BucketRuns)
	if err != nil {
		t.Fatal(err)
	}
	leases, err := js.KeyValue(ctx, bus.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	apiLane, err := bus.TaskSubject(pool)
	if err != nil {
		t.Fatal(err)
	}
	loginLane, err := bus.LoginTaskSubject(pool)
	if err != nil {
		t.Fatal(err)
	}
	// The scripted runner serves both lanes, as a runner does, and remembers which
	// lane each task came on.
	tasks, err := js.CreateOrUpdateConsumer(ctx, bus.StreamTasks, jetstream.ConsumerConfig{
		Durable: "test-runner", FilterSubjects: []string{apiLane, loginLane}, AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	taskStream, err := js.Stream(ctx, bus.StreamTasks)
	if err != nil {
		t.Fatal(err)
	}
	// The clock starts at the real time: the store stamps records with the real time
	// and the sweep compares them with the orchestrator's clock.
	clock := testkit.NewClock(time.Now())
	policy := testPolicy()
	for _, f := range edit {
		f(&policy)
	}
	logs := &testkit.SyncBuffer{}
	mem := cache.NewMemory(cache.MemoryOptions{Now: clock.Now})
	h := &harness{
		t: t, reg: newFakeRegistry(clock), vault: &fakeVault{}, clock: clock, cache: mem,
		runsKV: runsKV, tasks: tasks, logs: logs, taskStream: taskStream, loginLane: loginLane, lanes: map[string]string{},
	}
	h.o = New(Deps{
		Store: store.New(runsKV), JS: js, NC: nc, Leases: leases, Registry: h.reg, Vault: h.vault,
		Cache: mem, Tracer: noop.NewTracerProvider().Tracer("orch-test"), Pool: pool, Policy: policy,
		Log: slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	h.o.now = clock.Now
	h.reg.bundle = &latchkeyv1.Bundle{ProjectId: testProject, Version: 3, Automations: []*latchkeyv1.Automation{
		{Name: recipe.CreateAPI}, {Name: recipe.CheckAPI}, {Name: apiName},
	}}
	return h
}

// --- starting Runs and reading records ---

// apiRequest is a StartRunRequest for the test API on session s1.
func apiRequest(opts *latchkeyv1.RunOptions) *latchkeyv1.StartRunRequest {
	return &latchkeyv1.StartRunRequest{Api: apiName, AuthSessionId: sessID, Options: opts}
}

// start starts a Run as a public caller and fails the test if it is refused.
func (h *harness) start(req *latchkeyv1.StartRunRequest) *latchkeyv1.Run {
	h.t.Helper()
	run, err := h.o.Start(h.t.Context(), testProject, req, StartOptions{})
	if err != nil {
		h.t.Fatalf("Start(%v): %v", req, err)
	}
	return run
}

// startInternal starts a Run as Latchkey's own services do (AuthSession Runs).
func (h *harness) startInternal(req *latchkeyv1.StartRunRequest) *latchkeyv1.Run {
	h.t.Helper()
	run, err := h.o.Start(h.t.Context(), testProject, req, StartOptions{Internal: true})
	if err != nil {
		h.t.Fatalf("Start(internal, %v): %v", req, err)
	}
	return run
}

// record returns a Run's record from LK_RUNS.
func (h *harness) record(id string) *schedulerv1.RunRecord {
	h.t.Helper()
	rec, _, err := h.o.Store.Get(h.t.Context(), testProject, id)
	if err != nil {
		h.t.Fatalf("reading run %s: %v", id, err)
	}
	return rec
}

// wantRun checks a Run's state and failure reason.
func (h *harness) wantRun(id string, state latchkeyv1.RunState, reason latchkeyv1.FailureReason) *schedulerv1.RunRecord {
	h.t.Helper()
	rec := h.record(id)
	if got := rec.GetRun(); got.GetState() != state || got.GetFailureReason() != reason {
		h.t.Errorf("run %s (%s) is %s/%s (%q), want %s/%s", id, got.GetKind(), got.GetState(), got.GetFailureReason(), got.GetFailureMessage(), state, reason)
	}
	return rec
}

// wantSession checks the session's state and reason in the fake registry.
func (h *harness) wantSession(id string, state latchkeyv1.SessionState, reason latchkeyv1.FailureReason) *latchkeyv1.AuthSession {
	h.t.Helper()
	s := h.reg.get(id)
	if s.GetState() != state || s.GetStateReason() != reason {
		h.t.Errorf("session %s is %s/%s (%q), want %s/%s", id, s.GetState(), s.GetStateReason(), s.GetStateMessage(), state, reason)
	}
	return s
}

// --- the scripted runner ---

// takeTasks returns every task published since the last call, oldest first, and acks
// them. Publishing waits for JetStream's ack, and the stream's last sequence is
// updated before that ack, so it says exactly how many tasks there are to fetch;
// only the fetch itself is waited for (at most waitNATS).
func (h *harness) takeTasks() []*runnerv1.RunnerTask {
	h.t.Helper()
	ctx := h.t.Context()
	info, err := h.taskStream.Info(ctx)
	if err != nil {
		h.t.Fatalf("task stream info: %v", err)
	}
	last := info.State.LastSeq
	var out []*runnerv1.RunnerTask
	for h.seenSeq < last {
		batch, err := h.tasks.Fetch(int(last-h.seenSeq), jetstream.FetchMaxWait(waitNATS))
		if err != nil {
			h.t.Fatalf("fetching tasks: %v", err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				h.t.Fatalf("task metadata: %v", err)
			}
			task := &runnerv1.RunnerTask{}
			if err := proto.Unmarshal(msg.Data(), task); err != nil {
				h.t.Fatalf("undecodable task: %v", err)
			}
			if err := msg.Ack(); err != nil {
				h.t.Fatalf("acking task: %v", err)
			}
			h.seenSeq = meta.Sequence.Stream
			h.lanes[task.GetTaskId()] = msg.Subject()
			out = append(out, task)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			h.t.Fatalf("fetching tasks: %v", err)
		}
		if n == 0 {
			h.t.Fatalf("tasks up to sequence %d published but none delivered after %d within %s", last, h.seenSeq, waitNATS)
		}
	}
	return out
}

// takeTasksOf returns the next n tasks and checks that they are all of kind.
func (h *harness) takeTasksOf(kind runnerv1.TaskKind, n int) []*runnerv1.RunnerTask {
	h.t.Helper()
	tasks := h.takeTasks()
	if len(tasks) != n {
		h.t.Fatalf("%d tasks published (%s), want %d %s", len(tasks), kinds(tasks), n, kind)
	}
	for _, task := range tasks {
		if task.GetKind() != kind {
			h.t.Fatalf("tasks published: %s, want %d %s", kinds(tasks), n, kind)
		}
	}
	return tasks
}

// takeTask returns the one task published since the last call, which must be of kind.
func (h *harness) takeTask(kind runnerv1.TaskKind) *runnerv1.RunnerTask {
	h.t.Helper()
	return h.takeTasksOf(kind, 1)[0]
}

// onLoginLane reports whether task came on the pool's login lane.
func (h *harness) onLoginLane(task *runnerv1.RunnerTask) bool {
	return h.lanes[task.GetTaskId()] == h.loginLane
}

// noTasks checks that nothing was published since the last call.
func (h *harness) noTasks() {
	h.t.Helper()
	if tasks := h.takeTasks(); len(tasks) > 0 {
		h.t.Fatalf("unexpected tasks published: %s", kinds(tasks))
	}
}

func kinds(tasks []*runnerv1.RunnerTask) string {
	var s []string
	for _, t := range tasks {
		s = append(s, strings.TrimPrefix(t.GetKind().String(), "TASK_KIND_")+"("+t.GetRunId()+")")
	}
	return "[" + strings.Join(s, " ") + "]"
}

// result is the runner's answer to task with status. An API task that checked first
// reports the check's outcome as a runner does: INVALID for NEEDS_AUTH,
// INCONCLUSIVE for INCONCLUSIVE, VALID otherwise. The base revision is the one the
// task restored.
func result(task *runnerv1.RunnerTask, status runnerv1.TaskStatus) *runnerv1.TaskResult {
	res := &runnerv1.TaskResult{
		TaskId: task.GetTaskId(), RunId: task.GetRunId(), ProjectId: task.GetProjectId(), Status: status,
		BaseStateRevision: task.GetSession().GetStateRevision(), RunnerId: "runner-1",
	}
	if task.GetCheckFirst() {
		switch status {
		case runnerv1.TaskStatus_TASK_STATUS_NEEDS_AUTH:
			res.CheckOutcome = latchkeyv1.CheckOutcome_CHECK_OUTCOME_INVALID
		case runnerv1.TaskStatus_TASK_STATUS_INCONCLUSIVE:
			res.CheckOutcome = latchkeyv1.CheckOutcome_CHECK_OUTCOME_INCONCLUSIVE
		default:
			res.CheckOutcome = latchkeyv1.CheckOutcome_CHECK_OUTCOME_VALID
		}
	}
	return res
}

// failed is a FAILED result with reason.
func failed(task *runnerv1.RunnerTask, reason latchkeyv1.FailureReason) *runnerv1.TaskResult {
	res := result(task, runnerv1.TaskStatus_TASK_STATUS_FAILED)
	res.FailureReason, res.FailureMessage = reason, "scripted "+reason.String()
	return res
}

// loggedIn is a CREATE task's success, with the state it captured.
func loggedIn(task *runnerv1.RunnerTask) *runnerv1.TaskResult {
	res := result(task, runnerv1.TaskStatus_TASK_STATUS_SUCCEEDED)
	res.CapturedStateCiphertext = []byte("candidate-" + task.GetTaskId())
	return res
}

// checked is a CHECK task's outcome.
func checked(task *runnerv1.RunnerTask, outcome latchkeyv1.CheckOutcome) *runnerv1.TaskResult {
	res := result(task, runnerv1.TaskStatus_TASK_STATUS_SUCCEEDED)
	res.CheckOutcome = outcome
	if outcome != latchkeyv1.CheckOutcome_CHECK_OUTCOME_VALID {
		res.Status = runnerv1.TaskStatus_TASK_STATUS_FAILED
	}
	return res
}

// handle delivers a result as the result consumer does: nil and stale messages are
// acked (nil), a back-off comes back as the *RetryAfter the consumer would redeliver
// after; any other error fails the test.
func (h *harness) handle(res *runnerv1.TaskResult) *RetryAfter {
	h.t.Helper()
	err := h.o.HandleResult(h.t.Context(), res)
	var retry *RetryAfter
	switch {
	case err == nil || ErrStale(err):
		return nil
	case errors.As(err, &retry):
		return retry
	}
	h.t.Fatalf("HandleResult(%s %s): %v", res.GetRunId(), res.GetStatus(), err)
	return nil
}

// mustHandle delivers a result that must be settled at once (no back-off).
func (h *harness) mustHandle(res *runnerv1.TaskResult) {
	h.t.Helper()
	if retry := h.handle(res); retry != nil {
		h.t.Fatalf("HandleResult(%s %s) asked for a redelivery after %s", res.GetRunId(), res.GetStatus(), retry.Delay)
	}
}

// deliverEvents hands every queued session event to HandleSessionEvent, including
// those published meanwhile, and returns the types delivered.
func (h *harness) deliverEvents() []eventsv1.SessionEventType {
	h.t.Helper()
	var types []eventsv1.SessionEventType
	for {
		evs := h.reg.takeEvents()
		if len(evs) == 0 {
			return types
		}
		for _, ev := range evs {
			types = append(types, ev.GetType())
			if err := h.o.HandleSessionEvent(h.t.Context(), ev); err != nil && !ErrStale(err) {
				h.t.Fatalf("HandleSessionEvent(%s): %v", ev.GetType(), err)
			}
		}
	}
}

// login drives the one login in flight to a READY session: the CREATE task succeeds
// and its candidate passes the check in a fresh context. It returns the CREATE task.
func (h *harness) login() *runnerv1.RunnerTask {
	h.t.Helper()
	create := h.takeTask(runnerv1.TaskKind_TASK_KIND_CREATE)
	h.mustHandle(loggedIn(create))
	check := h.takeTask(runnerv1.TaskKind_TASK_KIND_CHECK)
	h.mustHandle(checked(check, latchkeyv1.CheckOutcome_CHECK_OUTCOME_VALID))
	return create
}

// rawRunValues returns every stored revision of every key of LK_RUNS, for checks
// that something was never written there.
func (h *harness) rawRunValues() [][]byte {
	h.t.Helper()
	ctx := h.t.Context()
	lister, err := h.runsKV.ListKeys(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out [][]byte
	for k := range lister.Keys() {
		hist, err := h.runsKV.History(ctx, k)
		if err != nil {
			h.t.Fatalf("history of %s: %v", k, err)
		}
		for _, e := range hist {
			out = append(out, e.Value())
		}
	}
	return out
}

// --- the fake registry ---

// fakeRegistry is the session registry's internal API in memory, with the real one's
// compare-and-swap rules: TransitionSession on the etag (and only legal moves),
// PutStorageState on the revision. Errors come back as the real client returns them
// after errs.FromStatus. Every change bumps the etag and queues the event the
// registry would publish.
type fakeRegistry struct {
	registryv1.SessionStateServiceClient // calls nobody expects panic

	clock *testkit.Clock

	mu          sync.Mutex
	sessions    map[string]*latchkeyv1.AuthSession
	states      map[string]map[int64][]byte // session -> revision -> ciphertext
	bundle      *latchkeyv1.Bundle          // nil: nothing deployed
	events      []*eventsv1.SessionEvent
	transitions []*registryv1.TransitionSessionRequest
	puts        []putCall
	completes   []*registryv1.CompleteCredentialsUpdateRequest
}

type putCall struct {
	req *registryv1.PutStorageStateRequest
	err error
}

func newFakeRegistry(clock *testkit.Clock) *fakeRegistry {
	return &fakeRegistry{clock: clock, sessions: map[string]*latchkeyv1.AuthSession{}, states: map[string]map[int64][]byte{}}
}

// remote returns e as the registry's gRPC client hands it to the orchestrator.
func remote(e *errs.Error) error { return errs.FromStatus(e.GRPCStatus().Err()) }

// add stores a session of typ in state; a READY or RECREATING one has revision 1.
func (r *fakeRegistry) add(id string, typ latchkeyv1.SessionType, state latchkeyv1.SessionState, origins ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &latchkeyv1.AuthSession{
		Id: id, ProjectId: testProject, Type: typ, State: state, Etag: 1, Origins: origins,
		CreateTime: timestamppb.New(r.clock.Now()),
	}
	r.states[id] = map[int64][]byte{}
	if state != latchkeyv1.SessionState_SESSION_STATE_PENDING {
		s.StateRevision = 1
		r.states[id][1] = []byte("state-" + id + "-r1")
	}
	if state == latchkeyv1.SessionState_SESSION_STATE_EXPIRED {
		s.StateReason, s.StateMessage = latchkeyv1.FailureReason_FAILURE_REASON_INVALID_CREDENTIALS, "the site rejected the password"
	}
	r.sessions[id] = s
}

// edit changes a session as another actor would (a person, another replica),
// bumping its etag; the event is the caller's to queue, if any.
func (r *fakeRegistry) edit(id string, f func(*latchkeyv1.AuthSession)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r.sessions[id])
	r.sessions[id].Etag++
}

// get returns a copy of a session.
func (r *fakeRegistry) get(id string) *latchkeyv1.AuthSession {
	r.mu.Lock()
	defer r.mu.Unlock()
	return proto.Clone(r.sessions[id]).(*latchkeyv1.AuthSession)
}

func (r *fakeRegistry) state(id string, rev int64) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.states[id][rev]
}

func (r *fakeRegistry) takeEvents() []*eventsv1.SessionEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := r.events
	r.events = nil
	return evs
}

// transitionsTo counts the accepted and refused transitions to state.
func (r *fakeRegistry) transitionsTo(state latchkeyv1.SessionState) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, t := range r.transitions {
		if t.GetToState() == state {
			n++
		}
	}
	return n
}

func (r *fakeRegistry) putCalls() []putCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.puts)
}

func (r *fakeRegistry) completeCalls() []*registryv1.CompleteCredentialsUpdateRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.completes)
}

func (r *fakeRegistry) GetSession(_ context.Context, req *registryv1.GetSessionRequest, _ ...grpc.CallOption) (*registryv1.GetSessionResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sessions[req.GetAuthSessionId()]
	if !ok || req.GetProjectId() != testProject {
		return nil, remote(errs.New(errs.ErrNotFound, "auth session %q not found", req.GetAuthSessionId()))
	}
	return &registryv1.GetSessionResponse{AuthSession: proto.Clone(s).(*latchkeyv1.AuthSession)}, nil
}

// legalMoves are the registry's transitions and the event each publishes (UNSPECIFIED:
// none), as in services/session-registry/internal/store/transitions.go.
var legalMoves = map[latchkeyv1.SessionState]map[latchkeyv1.SessionState]eventsv1.SessionEventType{
	latchkeyv1.SessionState_SESSION_STATE_PENDING: {
		latchkeyv1.SessionState_SESSION_STATE_READY:   eventsv1.SessionEventType_SESSION_EVENT_TYPE_READY,
		latchkeyv1.SessionState_SESSION_STATE_EXPIRED: eventsv1.SessionEventType_SESSION_EVENT_TYPE_EXPIRED,
	},
	latchkeyv1.SessionState_SESSION_STATE_READY: {
		latchkeyv1.SessionState_SESSION_STATE_READY:      eventsv1.SessionEventType_SESSION_EVENT_TYPE_UNSPECIFIED,
		latchkeyv1.SessionState_SESSION_STATE_RECREATING: eventsv1.SessionEventType_SESSION_EVENT_TYPE_RECREATING,
		latchkeyv1.SessionState_SESSION_STATE_EXPIRED:    eventsv1.SessionEventType_SESSION_EVENT_TYPE_EXPIRED,
	},
	latchkeyv1.SessionState_SESSION_STATE_RECREATING: {
		latchkeyv1.SessionState_SESSION_STATE_READY:   eventsv1.SessionEventType_SESSION_EVENT_TYPE_RECREATED,
		latchkeyv1.SessionState_SESSION_STATE_EXPIRED: eventsv1.SessionEventType_SESSION_EVENT_TYPE_EXPIRED,
	},
	latchkeyv1.SessionState_SESSION_STATE_EXPIRED: {
		latchkeyv1.SessionState_SESSION_STATE_READY:      eventsv1.SessionEventType_SESSION_EVENT_TYPE_READY,
		latchkeyv1.SessionState_SESSION_STATE_RECREATING: eventsv1.SessionEventType_SESSION_EVENT_TYPE_RECREATING,
	},
}

func (r *fakeRegistry) TransitionSession(_ context.Context, req *registryv1.TransitionSessionRequest, _ ...grpc.CallOption) (*registryv1.TransitionSessionResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.transitions = append(r.transitions, proto.Clone(req).(*registryv1.TransitionSessionRequest))
	if req.GetExpectedEtag() == 0 {
		return nil, remote(errs.New(errs.ErrInvalid, "expected_etag is required"))
	}
	s, ok := r.sessions[req.GetAuthSessionId()]
	if !ok {
		return nil, remote(errs.New(errs.ErrNotFound, "auth session %q not found", req.GetAuthSessionId()))
	}
	if s.GetEtag() != req.GetExpectedEtag() {
		return nil, remote(errs.New(errs.ErrStale, "auth session %q changed: etag %d, expected %d", s.GetId(), s.GetEtag(), req.GetExpectedEtag()))
	}
	from, to := s.GetState(), req.GetToState()
	typ, legal := legalMoves[from][to]
	if !legal {
		return nil, remote(errs.New(errs.ErrPrecondition, "auth session %q cannot go from %s to %s", s.GetId(), from, to))
	}
	if to == latchkeyv1.SessionState_SESSION_STATE_RECREATING && s.GetType() == latchkeyv1.SessionType_SESSION_TYPE_RECORDER {
		return nil, remote(errs.New(errs.ErrPrecondition, "auth session %q is a RECORDER session", s.GetId()))
	}
	if to == latchkeyv1.SessionState_SESSION_STATE_READY {
		rev := req.GetStateRevision()
		if rev == 0 {
			rev = s.GetStateRevision()
		}
		if _, ok := r.states[s.GetId()][rev]; !ok {
			return nil, remote(errs.New(errs.ErrPrecondition, "auth session %q has no storage state revision %d", s.GetId(), rev))
		}
		s.StateReason, s.StateMessage = 0, ""
	} else {
		s.StateReason, s.StateMessage = req.GetReason(), req.GetMessage()
	}
	s.State = to
	if t := req.GetLastValidateTime(); t != nil {
		s.LastValidateTime = t
	}
	if t := req.GetNextRefreshTime(); t != nil {
		s.NextRefreshTime = t
	}
	if len(req.GetOrigins()) > 0 && to != latchkeyv1.SessionState_SESSION_STATE_RECREATING {
		s.Origins = slices.Clone(req.GetOrigins())
	}
	s.Etag++
	if typ != eventsv1.SessionEventType_SESSION_EVENT_TYPE_UNSPECIFIED {
		r.queue(s, typ, from, req.GetRunId())
	}
	return &registryv1.TransitionSessionResponse{AuthSession: proto.Clone(s).(*latchkeyv1.AuthSession)}, nil
}

func (r *fakeRegistry) queue(s *latchkeyv1.AuthSession, typ eventsv1.SessionEventType, from latchkeyv1.SessionState, runID string) {
	r.events = append(r.events, &eventsv1.SessionEvent{
		ProjectId: s.GetProjectId(), AuthSessionId: s.GetId(), Type: typ, FromState: from, ToState: s.GetState(),
		Reason: s.GetStateReason(), Message: s.GetStateMessage(), StateRevision: s.GetStateRevision(), RunId: runID,
		Time: timestamppb.New(r.clock.Now()),
	})
}

func (r *fakeRegistry) PutStorageState(_ context.Context, req *registryv1.PutStorageStateRequest, _ ...grpc.CallOption) (*registryv1.PutStorageStateResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	resp, err := r.put(req)
	r.puts = append(r.puts, putCall{req: proto.Clone(req).(*registryv1.PutStorageStateRequest), err: err})
	return resp, err
}

func (r *fakeRegistry) put(req *registryv1.PutStorageStateRequest) (*registryv1.PutStorageStateResponse, error) {
	s, ok := r.sessions[req.GetAuthSessionId()]
	switch {
	case !ok:
		return nil, remote(errs.New(errs.ErrNotFound, "auth session %q not found", req.GetAuthSessionId()))
	case len(req.GetCiphertext()) == 0:
		return nil, remote(errs.New(errs.ErrInvalid, "ciphertext is empty"))
	case s.GetStateRevision() != req.GetBaseRevision():
		return nil, remote(errs.New(errs.ErrStale, "base revision %d is stale, the newest is %d", req.GetBaseRevision(), s.GetStateRevision()))
	}
	s.StateRevision++
	r.states[s.GetId()][s.GetStateRevision()] = slices.Clone(req.GetCiphertext())
	s.Etag++
	r.queue(s, eventsv1.SessionEventType_SESSION_EVENT_TYPE_STATE_WRITTEN, s.GetState(), "")
	return &registryv1.PutStorageStateResponse{Revision: s.GetStateRevision()}, nil
}

func (r *fakeRegistry) GetBundle(_ context.Context, req *registryv1.GetBundleRequest, _ ...grpc.CallOption) (*registryv1.GetBundleResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bundle == nil || req.GetProjectId() != testProject {
		return nil, remote(errs.New(errs.ErrNotFound, "no bundle deployed in project %q", req.GetProjectId()))
	}
	return &registryv1.GetBundleResponse{Bundle: proto.Clone(r.bundle).(*latchkeyv1.Bundle)}, nil
}

func (r *fakeRegistry) CompleteCredentialsUpdate(_ context.Context, req *registryv1.CompleteCredentialsUpdateRequest, _ ...grpc.CallOption) (*registryv1.CompleteCredentialsUpdateResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.completes = append(r.completes, proto.Clone(req).(*registryv1.CompleteCredentialsUpdateRequest))
	return &registryv1.CompleteCredentialsUpdateResponse{}, nil
}

func (r *fakeRegistry) ListSessionsDueForRefresh(_ context.Context, req *registryv1.ListSessionsDueForRefreshRequest, _ ...grpc.CallOption) (*registryv1.ListSessionsDueForRefreshResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	resp := &registryv1.ListSessionsDueForRefreshResponse{}
	for _, s := range r.sessions {
		due := s.GetNextRefreshTime()
		switch {
		case s.GetState() != latchkeyv1.SessionState_SESSION_STATE_READY || due == nil:
		case !due.AsTime().After(req.GetNow().AsTime()):
			resp.AuthSessions = append(resp.AuthSessions, proto.Clone(s).(*latchkeyv1.AuthSession))
		case resp.NextDueTime == nil || due.AsTime().Before(resp.NextDueTime.AsTime()):
			resp.NextDueTime = due
		}
	}
	return resp, nil
}

// --- the fake vault ---

// fakeVault seals by marking: the ciphertext names its context, so a test can find it
// (or make sure it is absent) wherever it travels.
type fakeVault struct {
	vaultv1.VaultServiceClient // calls nobody expects panic

	mu       sync.Mutex
	encrypts []*vaultv1.EncryptRequest
}

func sealedFor(kind, id string) []byte { return []byte(fmt.Sprintf("SEALED<%s/%s>", kind, id)) }

func (v *fakeVault) Encrypt(_ context.Context, req *vaultv1.EncryptRequest, _ ...grpc.CallOption) (*vaultv1.EncryptResponse, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.encrypts = append(v.encrypts, proto.Clone(req).(*vaultv1.EncryptRequest))
	return &vaultv1.EncryptResponse{Ciphertext: sealedFor(req.GetContext().GetKind(), req.GetContext().GetId()), KeyVersion: 1}, nil
}

func (v *fakeVault) encryptCalls() []*vaultv1.EncryptRequest {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.encrypts)
}

// --- steps many tests share ---

// startFailingCheck starts an API Run with opts on session s1, takes its task and
// answers that the check found the session logged out.
func (h *harness) startFailingCheck(opts *latchkeyv1.RunOptions) (*latchkeyv1.Run, *runnerv1.RunnerTask) {
	h.t.Helper()
	run := h.start(apiRequest(opts))
	task := h.takeTask(taskAPI)
	h.mustHandle(result(task, statusNeedsAuth))
	return run, task
}

// leaseHolder returns the create Run holding the session's recreate lease, or "".
func (h *harness) leaseHolder(session string) string {
	h.t.Helper()
	e, err := h.o.Leases.Get(h.t.Context(), leaseKey(&latchkeyv1.AuthSession{ProjectId: testProject, Id: session}))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return ""
	}
	if err != nil {
		h.t.Fatalf("reading lease: %v", err)
	}
	return string(e.Value())
}

// createChild returns the id of the AUTHSESSION_CREATE child of an API Run.
func (h *harness) createChild(runID string) string {
	h.t.Helper()
	for _, id := range h.record(runID).GetRun().GetChildRunIds() {
		if h.record(id).GetRun().GetKind() == latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE {
			return id
		}
	}
	h.t.Fatalf("run %s has no create child", runID)
	return ""
}

// putRequest is a state write of session s1 on base revision base.
func putRequest(ciphertext string, base int64) *registryv1.PutStorageStateRequest {
	return &registryv1.PutStorageStateRequest{ProjectId: testProject, AuthSessionId: sessID, Ciphertext: []byte(ciphertext), BaseRevision: base}
}

// published counts every task ever published in the harness. Unlike takeTasks it
// only reads, so subtests sharing a harness may call it at once, each with its own t.
func (h *harness) published(t testing.TB) uint64 {
	t.Helper()
	info, err := h.taskStream.Info(t.Context())
	if err != nil {
		t.Fatalf("task stream info: %v", err)
	}
	return info.State.LastSeq
}
