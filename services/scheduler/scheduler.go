// Package scheduler is the scheduler service: Runs and their orchestration (validate,
// recreate, execute), back-off, budgets and circuit breaking (DESIGN.md section 3),
// and Jobs (schedules and batches of Runs, internal/jobs). Run records live in the
// LK_RUNS KV bucket, Job records in LK_JOBS, and every step is a compare-and-swap, so
// any number of replicas share the work and a restarted scheduler picks up every Run
// and Job in flight.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/cache"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/libs/telemetry"
	"github.com/latchkey/latchkey/services/scheduler/internal/api"
	"github.com/latchkey/latchkey/services/scheduler/internal/consume"
	"github.com/latchkey/latchkey/services/scheduler/internal/jobs"
	"github.com/latchkey/latchkey/services/scheduler/internal/orch"
	"github.com/latchkey/latchkey/services/scheduler/internal/store"
)

// Config configures the scheduler.
type Config struct {
	// Pool is the runner pool tasks go to.
	Pool string
	// SweepInterval is how often lost Runs are looked for (default 5 s); StuckAfter is
	// how long a Run may sit without progress before the sweep re-drives it (30 s).
	SweepInterval time.Duration
	StuckAfter    time.Duration
	// RefreshInterval is how often READY sessions due for proactive refresh are
	// looked for (default 30 s).
	RefreshInterval time.Duration
	// SessionLoginBudget and OriginLoginBudget cap logins per hour per session and per
	// target origin (defaults 10 and 60).
	SessionLoginBudget int64
	OriginLoginBudget  int64
	// JobTick is how often due Jobs are looked for (default 1 s).
	JobTick time.Duration
}

// Deps are what the scheduler needs from its process.
type Deps struct {
	Logger   *slog.Logger
	Tracer   trace.TracerProvider
	NC       *nats.Conn
	JS       jetstream.JetStream
	Cache    cache.Cache
	Registry registryv1.SessionStateServiceClient
	Vault    vaultv1.VaultServiceClient
	// Meter receives the domain metrics (metrics.go); nil: none.
	Meter metric.MeterProvider
}

// Service is the scheduler.
type Service struct {
	cfg       Config
	deps      Deps
	srv       *server.Server
	runs      *api.Runs // the gRPC APIs
	metrics   *metrics
	jobsAPI   *api.Jobs
	jobs      *jobs.Engine
	orch      *orch.Orchestrator
	consumers *consume.Runner
	stop      context.CancelFunc
	sweeping  sync.WaitGroup

	// refreshKick wakes the refresh loop to read refreshAt, the earliest due time
	// reported since it last looked (zero: none).
	refreshKick chan struct{}
	refreshMu   sync.Mutex
	refreshAt   time.Time
}

// New returns the scheduler service.
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.Logger == nil || deps.Tracer == nil || deps.JS == nil || deps.NC == nil || deps.Cache == nil || deps.Registry == nil || deps.Vault == nil {
		return nil, errors.New("scheduler: logger, tracer, nats, jetstream, cache, registry and vault clients are required")
	}
	if cfg.Pool == "" {
		return nil, errors.New("scheduler: runner pool is empty")
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = 5 * time.Second
	}
	if cfg.StuckAfter <= 0 {
		cfg.StuckAfter = 30 * time.Second
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = 30 * time.Second
	}
	if cfg.JobTick <= 0 {
		cfg.JobTick = time.Second
	}
	return &Service{cfg: cfg, deps: deps, refreshKick: make(chan struct{}, 1)}, nil
}

func (s *Service) descs() []*grpc.ServiceDesc {
	return []*grpc.ServiceDesc{&latchkeyv1.RunService_ServiceDesc, &latchkeyv1.JobService_ServiceDesc}
}

// Register adds RunService and JobService to srv. The handlers are wired in Start;
// until then the services report NOT_SERVING.
func (s *Service) Register(srv *server.Server) {
	s.srv = srv
	s.runs = &api.Runs{NC: s.deps.NC}
	srv.Register(&latchkeyv1.RunService_ServiceDesc, s.runs, server.PolicyPublic, s.deps.Tracer)
	s.jobsAPI = &api.Jobs{}
	srv.Register(&latchkeyv1.JobService_ServiceDesc, s.jobsAPI, server.PolicyPublic, s.deps.Tracer)
}

// Start opens the Run store, starts the consumers and the sweep, and reports healthy.
func (s *Service) Start(ctx context.Context) error {
	needs := bus.Needs{
		Streams: []string{bus.StreamRuns, bus.StreamTasks, bus.StreamResults, bus.StreamEvents},
		Buckets: []string{bus.BucketRuns, bus.BucketJobs, bus.BucketLeases},
	}
	if err := bus.CheckReady(ctx, s.deps.JS, needs); err != nil {
		return fmt.Errorf("starting scheduler: %w", err)
	}
	runsKV, err := s.deps.JS.KeyValue(ctx, bus.BucketRuns)
	if err != nil {
		return fmt.Errorf("opening run records: %w", err)
	}
	leases, err := s.deps.JS.KeyValue(ctx, bus.BucketLeases)
	if err != nil {
		return fmt.Errorf("opening leases: %w", err)
	}
	jobsKV, err := s.deps.JS.KeyValue(ctx, bus.BucketJobs)
	if err != nil {
		return fmt.Errorf("opening job records: %w", err)
	}
	policy := orch.DefaultPolicy()
	if s.cfg.SessionLoginBudget > 0 {
		policy.SessionBudget = s.cfg.SessionLoginBudget
	}
	if s.cfg.OriginLoginBudget > 0 {
		policy.OriginBudget = s.cfg.OriginLoginBudget
	}
	tracer := s.deps.Tracer.Tracer("github.com/latchkey/latchkey/services/scheduler")
	if s.metrics, err = newMetrics(s.deps.Meter); err != nil {
		return fmt.Errorf("starting scheduler: %w", err)
	}
	var refs []bus.ConsumerRef
	for _, spec := range s.specs() {
		refs = append(refs, bus.ConsumerRef{Stream: spec.Stream, Consumer: spec.Durable})
	}
	if err := bus.RegisterConsumerGauges(telemetry.Meter(s.deps.Meter, "github.com/latchkey/latchkey/services/scheduler"), s.deps.JS, refs...); err != nil {
		return fmt.Errorf("starting scheduler: %w", err)
	}
	st := store.New(runsKV)
	s.orch = orch.New(orch.Deps{
		Store: st, JS: s.deps.JS, NC: s.deps.NC, Leases: leases, Registry: s.deps.Registry, Vault: s.deps.Vault,
		Cache: s.deps.Cache, Tracer: tracer, Log: s.deps.Logger, Pool: s.cfg.Pool, Policy: policy,
		RunEnded: func(ctx context.Context, run *latchkeyv1.Run) {
			s.metrics.runEnded(ctx, run)
			s.jobs.RunEnded(ctx, run)
		},
		RefreshDue:    s.refreshDue,
		CircuitOpened: s.metrics.circuitOpened,
	})
	s.runs.SetOrchestrator(s.orch)
	s.jobs = jobs.New(jobs.NewStore(jobsKV), s.orch, s.deps.JS, tracer, s.deps.Logger, jobs.Options{OnEvent: s.metrics.jobEvent})
	s.jobsAPI.SetEngine(s.jobs, s.orch)
	s.consumers = consume.NewRunner(s.deps.JS, tracer, s.deps.Logger)
	for _, spec := range s.specs() {
		if err := s.consumers.Start(ctx, spec); err != nil {
			return err
		}
	}
	sweepCtx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.sweeping.Add(3)
	go s.every(sweepCtx, s.cfg.SweepInterval, "sweep", func(ctx context.Context) error { return s.orch.Sweep(ctx, s.cfg.StuckAfter) })
	go s.refreshLoop(sweepCtx)
	go s.every(sweepCtx, s.cfg.JobTick, "job tick", s.jobs.Tick)
	for _, d := range s.descs() {
		s.srv.SetServing(d.ServiceName, true)
	}
	return nil
}

// every calls fn each interval until ctx ends, logging its errors as what.
func (s *Service) every(ctx context.Context, interval time.Duration, what string, fn func(context.Context) error) {
	defer s.sweeping.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				s.deps.Logger.WarnContext(ctx, what+" failed", "error", err)
			}
		}
	}
}

// refreshLoop runs proactive refresh rounds: one soon after start, then every
// RefreshInterval, or sooner when a session falls due before that — a keep-alive
// shorter than the interval, as the registry reports after each round and this
// replica's logins and checks report through refreshDue — but never more often than
// orch.MinRefreshSpacing.
func (s *Service) refreshLoop(ctx context.Context) {
	defer s.sweeping.Done()
	wake := time.Now().Add(orch.MinRefreshSpacing)
	t := time.NewTimer(orch.MinRefreshSpacing)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.refreshKick:
			s.refreshMu.Lock()
			at := s.refreshAt
			s.refreshAt = time.Time{}
			s.refreshMu.Unlock()
			if !at.IsZero() && at.Before(wake) {
				wake = at
				t.Reset(max(time.Until(at), orch.MinRefreshSpacing))
			}
			continue
		case <-t.C:
		}
		next, err := s.orch.Refresh(ctx)
		if err != nil && ctx.Err() == nil {
			s.deps.Logger.WarnContext(ctx, "proactive refresh failed", "error", err)
		}
		wait := refreshWait(s.cfg.RefreshInterval, next, time.Now())
		wake = time.Now().Add(wait)
		t.Reset(wait)
	}
}

// refreshDue tells the refresh loop a session falls due at at. It never blocks: the
// loop takes the earliest time reported since it last looked.
func (s *Service) refreshDue(at time.Time) {
	s.refreshMu.Lock()
	if s.refreshAt.IsZero() || at.Before(s.refreshAt) {
		s.refreshAt = at
	}
	s.refreshMu.Unlock()
	select {
	case s.refreshKick <- struct{}{}:
	default:
	}
}

// refreshWait is how long the refresh loop sleeps: until next when it comes before
// the interval, never less than orch.MinRefreshSpacing.
func refreshWait(interval time.Duration, next, now time.Time) time.Duration {
	wait := interval
	if !next.IsZero() {
		wait = min(wait, next.Sub(now))
	}
	return max(wait, orch.MinRefreshSpacing)
}

// Stop reports the scheduler unhealthy, stops the sweep, and drains the consumers.
func (s *Service) Stop(ctx context.Context) error {
	for _, d := range s.descs() {
		s.srv.SetServing(d.ServiceName, false)
	}
	if s.stop != nil {
		s.stop()
		s.sweeping.Wait()
	}
	if s.consumers != nil {
		s.consumers.Stop(ctx)
	}
	return nil
}
