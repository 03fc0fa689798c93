// Package engine runs the runner SDK's tasks: it takes them from JetStream
// (LK_TASKS, lk.tasks.<pool>), hands them to the runner holding the session's warm
// context or runs them here, and answers on lk.results.<run>. One task runs in phases,
// each in the file named after it: acquire (a warm context of the session, or a new
// one), restore (the session's state into it), check, execute (a Go handler or a
// recipe), capture and write back (the state the browser ends with) and result (what
// the task answers, and whether the context stays warm). RECORD tasks host the live
// view instead (record.go), RunLocal runs one recipe without the services (local.go).
//
// The root package libs/runner re-exports Runner, Config and Deps; the types a handler
// sees are defined in internal/sdk.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/runner/internal/chrome"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
	"github.com/latchkey/latchkey/libs/runner/internal/warm"
)

// Runner runs browser tasks. Its methods are safe for concurrent use.
type Runner struct {
	cfg    Config
	deps   Deps
	log    *slog.Logger
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	pool   *chrome.Pool
	// ownPool is false for a runner sharing another's browsers (tests).
	ownPool bool
	warmSet *warm.Set[*chrome.Context]
	// slots bound the tasks of the API lane that run at once (Contexts), loginSlots
	// those of the login lane (LoginContexts).
	slots, loginSlots chan struct{}
	// stale holds the state revisions checks found logged out (stale.go).
	stale *staleStates
	// totp remembers the TOTP time steps sessions used (totp.go).
	totp *totpSteps

	mu       sync.Mutex
	handlers map[string]sdk.Handler
	running  map[string]*execution // by run id (and check run id)
	metrics  *metrics
	// jars is each session's newest browser context here: a task of the session that
	// finds no idle warm tab opens a tab in it (acquire.go).
	jars    map[string]*chrome.Jar
	waiting map[string]chan []byte
	bundles *bundleCache
	vars    *varsCache

	nc       *nats.Conn
	subs     []*nats.Subscription
	offers   map[string]*nats.Subscription // by session, while its warm context idles here
	taskCtx  context.Context
	stopping bool
	stop     context.CancelFunc
	// abortTasks ends running tasks when Stop's deadline passes.
	abortTasks context.CancelFunc
	loops      sync.WaitGroup
	started    bool
}

// New returns a Runner; Start launches its browsers and its task loop.
func New(cfg Config, deps Deps) (*Runner, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Tracer == nil {
		deps.Tracer = noop.NewTracerProvider()
	}
	r := &Runner{
		cfg: cfg, deps: deps, log: deps.Logger.With("runner_id", cfg.ID),
		tracer: deps.Tracer.Tracer("github.com/latchkey/latchkey/libs/runner"),
		prop:   bus.Propagator(),
		slots:  make(chan struct{}, cfg.Contexts), loginSlots: make(chan struct{}, cfg.LoginContexts),
		stale:    newStaleStates(),
		totp:     newTOTPSteps(deps.JS, deps.Logger),
		handlers: map[string]sdk.Handler{}, running: map[string]*execution{}, jars: map[string]*chrome.Jar{}, waiting: map[string]chan []byte{},
		offers:  map[string]*nats.Subscription{},
		bundles: newBundleCache(deps.Bundles, cfg.BundleCacheTTL),
		vars:    newVarsCache(deps.States, cfg.BundleCacheTTL),
	}
	r.attach(chrome.NewPool(cfg.ChromiumPath, cfg.Browsers, cfg.RecycleAfter, r.log), true)
	if err := r.newMetrics(deps.Meter); err != nil {
		return nil, err
	}
	return r, nil
}

// attach gives the runner its browsers, and a warm set of their contexts. A pool
// the runner owns is started and closed with it, and its crashed browsers' warm
// contexts are dropped; tests share one pool between runners.
func (r *Runner) attach(p *chrome.Pool, own bool) {
	r.pool, r.ownPool = p, own
	r.warmSet = warm.NewSet(warm.Limits{
		Max: r.cfg.WarmMax, PerSession: r.cfg.Contexts, Memory: r.cfg.WarmMemory, PerContext: r.cfg.ContextMemory, Idle: r.cfg.WarmIdle,
	}, p.CloseIdle, r.advertise)
	if own {
		p.OnCrash = func(b *chrome.Browser) {
			r.warmSet.Drop(func(bc *chrome.Context) bool { return bc.Browser() == b })
		}
	}
}

// ID is the runner's id, as it appears in results.
func (r *Runner) ID() string { return r.cfg.ID }

// Handle registers a Go handler for an API ("auth-sessions/create",
// "auth-sessions/check" or a user API). A handler takes precedence over a recipe of the
// same name. Register handlers before Start.
func (r *Runner) Handle(api string, h sdk.Handler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handlers[api] = h
}

func (r *Runner) handler(api string) sdk.Handler {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.handlers[api]
}

// Start launches the browsers and, when the runner has JetStream, the task loop, the
// cancel and resume subscriptions and the warm-context reaper. ctx bounds the start
// only.
func (r *Runner) Start(ctx context.Context) error {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return errors.New("runner: already started")
	}
	r.started = true
	r.mu.Unlock()
	if r.ownPool { // a shared pool (tests) runs already
		if err := r.pool.Start(ctx); err != nil {
			return fmt.Errorf("starting runner: %w", err)
		}
	}
	runCtx, stop := context.WithCancel(context.Background())
	r.stop = stop
	r.loops.Go(func() { r.reapLoop(runCtx) })
	if r.deps.JS == nil {
		return nil
	}
	if err := r.startLoop(ctx, runCtx); err != nil {
		stop()
		return fmt.Errorf("starting runner: %w", err)
	}
	return nil
}

// Stop stops taking tasks, waits (within ctx) for the running ones, and closes every
// browser.
func (r *Runner) Stop(ctx context.Context) error {
	if r.stop != nil {
		r.stop()
	}
	r.mu.Lock()
	r.stopping = true
	subs := append([]*nats.Subscription(nil), r.subs...)
	for s, sub := range r.offers {
		subs = append(subs, sub)
		delete(r.offers, s)
	}
	r.mu.Unlock()
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
	done := make(chan struct{})
	go func() { r.loops.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("stopping runner: %w", ctx.Err())
		if r.abortTasks != nil {
			r.abortTasks()
		}
		<-done
	}
	if r.abortTasks != nil {
		r.abortTasks()
	}
	r.warmSet.CloseAll()
	if r.ownPool {
		r.pool.Close()
	}
	return err
}

func (r *Runner) reapLoop(ctx context.Context) {
	t := time.NewTicker(max(r.cfg.WarmIdle/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.warmSet.Reap()
			r.pruneJars()
		}
	}
}

// WarmContexts is the number of idle warm contexts held, for metrics and tests.
func (r *Runner) WarmContexts() int { return r.warmSet.Len() }

// BrowserPIDs returns the process ids of the running Chromium processes.
func (r *Runner) BrowserPIDs() []int { return r.pool.PIDs() }
