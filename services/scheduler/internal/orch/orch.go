// Package orch drives Runs through the AuthSession rules of DESIGN.md section 3: the
// check before every API attempt (fused into the API's browser context), one login
// however many Runs find a session expired, typed failures, back-off, budgets, and
// verification of a new state in a fresh context. It is a state machine over messages:
// each step reads the Run's KV record, decides, publishes, and writes the record back
// with compare-and-swap, so any scheduler replica can take any Run's next message.
package orch

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/cache"
	"github.com/latchkey/latchkey/libs/domain"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/logging"
	"github.com/latchkey/latchkey/services/scheduler/internal/store"
)

// Policy holds the limits of orchestration.
type Policy struct {
	// LeaseTTL bounds how long one login may hold a session's recreate lease.
	LeaseTTL time.Duration
	// TaskTimeout is the deadline given to each task.
	TaskTimeout time.Duration
	// SessionBudget and OriginBudget cap logins per session and per target origin
	// within BudgetWindow; past it the session is EXPIRED (LOGIN_BUDGET_EXHAUSTED).
	SessionBudget int64
	OriginBudget  int64
	BudgetWindow  time.Duration
	// BackoffBase and BackoffMax shape the exponential back-off (with full jitter)
	// between transient create failures.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// CircuitThreshold transient login failures within CircuitWindow open the
	// session's circuit for CircuitWindow: recreates are refused meanwhile.
	CircuitThreshold int64
	CircuitWindow    time.Duration
	// PlatformRetries bounds how often one Run's tasks are sent again after failures of
	// Latchkey's own infrastructure, with a jittered exponential back-off between
	// PlatformBackoffBase and PlatformBackoffMax (platform.go).
	PlatformRetries     int32
	PlatformBackoffBase time.Duration
	PlatformBackoffMax  time.Duration
	// IdempotencyOrphanAfter is how old a claimed idempotency key whose Run was never
	// stored must be before another StartRun with that key takes it over.
	IdempotencyOrphanAfter time.Duration
}

// DefaultPolicy is the policy unless configured otherwise.
func DefaultPolicy() Policy {
	return Policy{
		LeaseTTL: 5 * time.Minute, TaskTimeout: 2 * time.Minute,
		SessionBudget: 10, OriginBudget: 60, BudgetWindow: time.Hour,
		BackoffBase: 500 * time.Millisecond, BackoffMax: 30 * time.Second,
		CircuitThreshold: 5, CircuitWindow: 10 * time.Minute,
		PlatformRetries: 8, PlatformBackoffBase: 500 * time.Millisecond, PlatformBackoffMax: 10 * time.Second,
		IdempotencyOrphanAfter: 10 * time.Second,
	}
}

// Deps are what the orchestrator works with.
type Deps struct {
	Store    *store.Store
	JS       jetstream.JetStream
	NC       *nats.Conn
	Leases   jetstream.KeyValue
	Registry registryv1.SessionStateServiceClient
	Vault    vaultv1.VaultServiceClient
	// Cache holds sealed runtime credentials and the login budget counters.
	Cache  cache.Cache
	Tracer trace.Tracer
	Log    *slog.Logger
	Pool   string
	Policy Policy
	// RunEnded, if set, is called after every Run ends (hooks.go).
	RunEnded RunEndedFunc
	// RefreshDue, if set, is told when a session's next proactive refresh falls due
	// (hooks.go), so the refresh loop wakes for keep-alives shorter than its interval.
	RefreshDue RefreshDueFunc
	// CircuitOpened, if set, is told when a session's circuit opens (hooks.go).
	CircuitOpened CircuitOpenedFunc
}

// Orchestrator drives Runs.
type Orchestrator struct {
	Deps
	prop    propagation.TextMapPropagator
	now     func() time.Time
	bundles sync.Map // project/site -> cachedBundle (start.go)
}

// New returns an orchestrator.
func New(d Deps) *Orchestrator {
	return &Orchestrator{Deps: d, prop: bus.Propagator(), now: time.Now}
}

// NewID returns a time-ordered id with prefix, valid as a NATS token and KV key, so
// listing keys in reverse order lists newest first.
func NewID(prefix string) string {
	var r [5]byte
	_, _ = rand.Read(r[:])
	enc := base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)
	ts := uint64(time.Now().UnixMilli())
	var tb [8]byte
	for i := 7; i >= 0; i-- {
		tb[i] = byte(ts)
		ts >>= 8
	}
	return prefix + "-" + enc.EncodeToString(tb[2:]) + enc.EncodeToString(r[:])
}

// traceContext captures ctx's trace so the Run can be resumed in its own trace.
func (o *Orchestrator) traceContext(ctx context.Context) map[string]string {
	carrier := propagation.MapCarrier{}
	o.prop.Inject(ctx, carrier)
	return carrier
}

// runContext returns ctx carrying the Run's own trace as parent, so work resumed from
// another message stays in the Run's trace, and the Run's ids for every log line of it
// (in this service and the ones its tasks reach).
func (o *Orchestrator) runContext(ctx context.Context, rec *schedulerv1.RunRecord) context.Context {
	if len(rec.GetTraceContext()) > 0 {
		ctx = o.prop.Extract(ctx, propagation.MapCarrier(rec.GetTraceContext()))
	}
	r := rec.GetRun()
	return logging.WithRun(ctx, r.GetId(), r.GetAuthSessionId(), r.GetProjectId())
}

// emit publishes a RunEvent for the Run's new state on lk.events.run.<project>.<run>.
// The event that ends a Run waits for JetStream's ack; progress events do not (the
// record in KV is the truth, and they leave on the same connection before the task
// whose result could end the Run, so they stay in order). That saves two
// acknowledged round trips on every Run's path.
func (o *Orchestrator) emit(ctx context.Context, rec *schedulerv1.RunRecord, event string) {
	run := rec.GetRun()
	subj, err := bus.RunEventSubject(run.GetProjectId(), run.GetId())
	if err != nil {
		return
	}
	ev := &eventsv1.RunEvent{Run: run, Event: event, Time: timestamppb.New(o.now())}
	b, err := proto.Marshal(ev)
	if err != nil {
		return
	}
	o.publishEvent(ctx, bus.NewMsg(ctx, o.prop, subj, b, ""), run)
	if !rec.GetEventsJson() {
		return
	}
	// The mirror for a publisher that speaks JSON only.
	if subj, err = bus.RunEventJSONSubject(run.GetProjectId(), run.GetId()); err != nil {
		return
	}
	if b, err = protojson.Marshal(ev); err != nil {
		return
	}
	msg := bus.NewMsg(ctx, o.prop, subj, b, "")
	msg.Header.Set(bus.HeaderContentType, bus.ContentTypeJSON)
	o.publishEvent(ctx, msg, run)
}

// publishEvent publishes a run event: asynchronously while the Run goes on, waiting
// for the stream's acknowledgement when it ended.
func (o *Orchestrator) publishEvent(ctx context.Context, msg *nats.Msg, run *latchkeyv1.Run) {
	var err error
	if !domain.RunEnded(run.GetState()) {
		_, err = o.JS.PublishMsgAsync(msg)
	} else {
		_, err = o.JS.PublishMsg(ctx, msg)
	}
	if err != nil {
		o.Log.WarnContext(ctx, "publishing run event failed", "run_id", run.GetId(), "subject", msg.Subject, "error", err)
	}
}

// publishTask sends a task to the runner pool, deduplicated by its id. Logins and the
// verification of the state a login captured go on the pool's login lane, which
// runners serve with capacity of its own: they never queue behind the API work of the
// Runs that wait for them.
func (o *Orchestrator) publishTask(ctx context.Context, t *runnerv1.RunnerTask) error {
	subject := bus.TaskSubject
	if loginLane(t) {
		subject = bus.LoginTaskSubject
	}
	subj, err := subject(o.Pool)
	if err != nil {
		return err
	}
	if t.Deadline == nil {
		t.Deadline = timestamppb.New(o.now().Add(o.Policy.TaskTimeout))
	}
	b, err := proto.Marshal(t)
	if err != nil {
		return fmt.Errorf("encoding task: %w", err)
	}
	ctx, span := bus.StartProducerSpan(ctx, o.Tracer, subj, "task "+strings.ToLower(strings.TrimPrefix(t.GetKind().String(), "TASK_KIND_")))
	defer span.End()
	// The task id is the message id: JetStream drops a second copy of a publish whose
	// answer was lost, so trying again never queues the task twice.
	for attempt := range publishAttempts {
		_, err = o.JS.PublishMsg(ctx, bus.NewMsg(ctx, o.prop, subj, b, t.GetTaskId()))
		if err == nil || ctx.Err() != nil || attempt == publishAttempts-1 {
			break
		}
		time.Sleep(publishRetryWait << attempt)
	}
	if err != nil {
		span.RecordError(err)
		if o.taskNotSent(ctx, t, err) {
			return nil // the sweep sends it again after the back-off (platform.go)
		}
		return fmt.Errorf("publishing task: %w", err)
	}
	return nil
}

// publishAttempts and publishRetryWait bound how long publishTask tries one task
// (about 0.7 s, while a JetStream cluster elects a new stream leader) before the Run
// falls back to a platform retry.
const (
	publishAttempts  = 3
	publishRetryWait = 250 * time.Millisecond
)

// loginLane reports whether a task logs a session in (CREATE) or verifies the state a
// login captured (a CHECK of a candidate state).
func loginLane(t *runnerv1.RunnerTask) bool {
	switch t.GetKind() {
	case runnerv1.TaskKind_TASK_KIND_CREATE:
		return true
	case runnerv1.TaskKind_TASK_KIND_CHECK:
		return len(t.GetCandidateStateCiphertext()) > 0
	}
	return false
}
