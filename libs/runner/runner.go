// Package runner is Latchkey's runner SDK: the engine of the browser-runner service and
// of any runner a user builds with their own Go handlers (DESIGN.md sections 3 and 7).
//
// A Runner keeps a few long-lived Chromium processes, each hosting many isolated browser
// contexts (Target.createBrowserContext). A context belongs to one AuthSession for its
// whole life and stays warm between that session's tasks. The Runner takes tasks from
// JetStream (LK_TASKS, lk.tasks.<pool>), restores the session's storage state, runs the
// session's check, its create or an API — a Go Handler registered with Handle, or else
// a recipe of the project's bundle — captures the state the browser ends with, seals it
// through the vault and answers on lk.results.<run>.
//
//	r, err := runner.New(runner.Config{Pool: "default"}, runner.Deps{...})
//	r.Handle("list-invoices", func(ctx context.Context, t *runner.Task) (any, error) {
//		return chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#invoices")))
//	})
//	err = r.Start(ctx)
//	defer r.Stop(context.Background())
package runner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/recipe"
)

// Defaults of Config.
const (
	DefaultContexts       = 2
	DefaultBrowsers       = 1
	DefaultRecycleAfter   = 500
	DefaultWarmMax        = 32
	DefaultWarmIdle       = 10 * time.Minute
	DefaultContextMemory  = 67 << 20
	DefaultWarmMemory     = 1 << 30
	DefaultAckWait        = 30 * time.Second
	DefaultMaxDeliver     = 5
	DefaultTaskTimeout    = 2 * time.Minute
	DefaultStepTimeout    = 15 * time.Second
	DefaultAskWait        = 5 * time.Minute
	DefaultBundleCacheTTL = 30 * time.Second
)

// Config tunes a Runner. Zero fields take the defaults above.
type Config struct {
	// Pool is the task pool the runner takes from (lk.tasks.<pool>).
	Pool string
	// ID names this runner in results and logs; default: host name and a random suffix.
	ID string
	// Contexts is how many tasks run at once (LATCHKEY_RUNNER_CONTEXTS).
	Contexts int
	// Browsers is how many Chromium processes host the contexts.
	Browsers int
	// ChromiumPath is the browser binary; empty looks for chromium on PATH.
	ChromiumPath string
	// RecycleAfter replaces a browser after it created this many contexts.
	RecycleAfter int
	// WarmMax bounds the idle warm contexts kept for their sessions.
	WarmMax int
	// WarmIdle closes a warm context unused for this long.
	WarmIdle time.Duration
	// WarmMemory is the memory budget of idle warm contexts, counted at ContextMemory
	// each (the PSS of one context's renderer).
	WarmMemory    int64
	ContextMemory int64
	// AckWait is how long JetStream waits for a heartbeat before redelivering a task.
	AckWait time.Duration
	// MaxDeliver bounds the deliveries of one task.
	MaxDeliver int
	// TaskTimeout bounds a task that carries no deadline.
	TaskTimeout time.Duration
	// StepTimeout bounds a recipe step that sets no timeout.
	StepTimeout time.Duration
	// AskWait bounds an ask step that sets no wait.
	AskWait time.Duration
	// BundleCacheTTL is how long the newest bundle (version 0) is cached; numbered
	// versions never change and stay cached.
	BundleCacheTTL time.Duration
	// LiveKey seals the live view of RECORD tasks (bus.SealLive); without it the
	// runner answers RECORD tasks FAILED.
	LiveKey []byte
}

func (c Config) withDefaults() (Config, error) {
	if c.Pool == "" {
		return c, errors.New("runner: a pool name is required")
	}
	if err := bus.CheckToken(c.Pool); err != nil {
		return c, fmt.Errorf("runner: pool: %w", err)
	}
	if c.Contexts < 0 || c.Browsers < 0 || c.WarmMax < 0 {
		return c, errors.New("runner: contexts, browsers and warm max must not be negative")
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Contexts, DefaultContexts)
	def(&c.Browsers, DefaultBrowsers)
	def(&c.RecycleAfter, DefaultRecycleAfter)
	def(&c.WarmMax, DefaultWarmMax)
	def(&c.MaxDeliver, DefaultMaxDeliver)
	defD(&c.WarmIdle, DefaultWarmIdle)
	defD(&c.AckWait, DefaultAckWait)
	defD(&c.TaskTimeout, DefaultTaskTimeout)
	defD(&c.StepTimeout, DefaultStepTimeout)
	defD(&c.AskWait, DefaultAskWait)
	defD(&c.BundleCacheTTL, DefaultBundleCacheTTL)
	if c.WarmMemory == 0 {
		c.WarmMemory = DefaultWarmMemory
	}
	if c.ContextMemory == 0 {
		c.ContextMemory = DefaultContextMemory
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		var b [3]byte
		_, _ = rand.Read(b[:])
		c.ID = fmt.Sprintf("%s-%s", host, hex.EncodeToString(b[:]))
	}
	if c.ChromiumPath == "" {
		for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
			if p, err := exec.LookPath(name); err == nil {
				c.ChromiumPath = p
				break
			}
		}
		if c.ChromiumPath == "" {
			return c, errors.New("runner: no Chromium found on PATH; install chromium or set LATCHKEY_CHROMIUM_PATH")
		}
	}
	return c, nil
}

// Deps are what a Runner works with. JS, States, Vault and Bundles may be nil for a
// runner that only runs recipes locally (RunLocal); GRPC implements the three backends
// with the registry's and the vault's clients.
type Deps struct {
	Logger  *slog.Logger
	Tracer  trace.TracerProvider
	JS      jetstream.JetStream
	States  StateStore
	Vault   Vault
	Bundles BundleStore
}

// Runner runs browser tasks. Its methods are safe for concurrent use.
type Runner struct {
	cfg    Config
	deps   Deps
	log    *slog.Logger
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	pool   *pool
	// ownPool is false for a runner sharing another's browsers (tests).
	ownPool bool
	warm    *warmSet
	slots   chan struct{}

	mu       sync.Mutex
	handlers map[string]Handler
	running  map[string]*execution // by run id (and check run id)
	waiting  map[string]chan []byte
	bundles  *bundleCache
	vars     *varsCache

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
		tracer:   deps.Tracer.Tracer("github.com/latchkey/latchkey/libs/runner"),
		prop:     bus.Propagator(),
		slots:    make(chan struct{}, cfg.Contexts),
		handlers: map[string]Handler{}, running: map[string]*execution{}, waiting: map[string]chan []byte{},
		offers:  map[string]*nats.Subscription{},
		bundles: newBundleCache(deps.Bundles, cfg.BundleCacheTTL),
		vars:    newVarsCache(deps.States, cfg.BundleCacheTTL),
	}
	r.pool, r.ownPool = newPool(cfg.ChromiumPath, cfg.Browsers, cfg.RecycleAfter, r.log), true
	r.warm = &warmSet{
		idle: map[string][]*bctx{}, max: cfg.WarmMax, perSession: cfg.Contexts, budget: cfg.WarmMemory, perCtx: cfg.ContextMemory,
		idleAfter: cfg.WarmIdle, closeFn: r.pool.closeContext, now: time.Now,
	}
	r.pool.onCrash = r.warm.dropBrowser
	r.warm.onIdle = r.advertise
	return r, nil
}

// ID is the runner's id, as it appears in results.
func (r *Runner) ID() string { return r.cfg.ID }

// Handle registers a Go handler for an API ("auth-sessions/create",
// "auth-sessions/check" or a user API). A handler takes precedence over a recipe of the
// same name. Register handlers before Start.
func (r *Runner) Handle(api string, h Handler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handlers[api] = h
}

func (r *Runner) handler(api string) Handler {
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
		if err := r.pool.start(ctx); err != nil {
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
	r.warm.closeAll()
	if r.ownPool {
		r.pool.close()
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
			r.warm.reap()
		}
	}
}

// WarmContexts is the number of idle warm contexts held, for metrics and tests.
func (r *Runner) WarmContexts() int { return r.warm.len() }

// BrowserPIDs returns the process ids of the running Chromium processes.
func (r *Runner) BrowserPIDs() []int { return r.pool.pids() }

// parseBundle is recipe.Parse for a project's bundle.
func parseBundle(files []recipe.File) (*recipe.Bundle, error) {
	return recipe.Parse(files, recipe.Options{})
}
