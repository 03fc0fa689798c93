package runner

import (
	"github.com/latchkey/latchkey/libs/runner/internal/engine"
)

// Runner runs browser tasks; New makes one. Its methods are safe for concurrent use:
// Handle registers a Go handler, Start launches the browsers and the task loop, Stop
// stops it, Execute runs one task without JetStream, RunLocal runs one recipe without
// the services, and ID, WarmContexts and BrowserPIDs report on it.
type Runner = engine.Runner

// Config tunes a Runner: its pool (required), how many tasks run at once (Contexts),
// its browsers, the warm set's bounds, JetStream's AckWait and MaxDeliver, the task,
// step and ask timeouts, and the live-view key of recordings. Zero fields take the
// defaults below.
type Config = engine.Config

// Deps are what a Runner works with: a logger, a tracer, JetStream, and the backends
// (StateStore, Vault, BundleStore; GRPC implements all three). JS and the backends
// may be nil for a runner that only runs recipes locally (RunLocal).
type Deps = engine.Deps

// Defaults of Config.
const (
	DefaultContexts       = engine.DefaultContexts
	DefaultBrowsers       = engine.DefaultBrowsers
	DefaultRecycleAfter   = engine.DefaultRecycleAfter
	DefaultWarmMax        = engine.DefaultWarmMax
	DefaultWarmIdle       = engine.DefaultWarmIdle
	DefaultContextMemory  = engine.DefaultContextMemory
	DefaultWarmMemory     = engine.DefaultWarmMemory
	DefaultAckWait        = engine.DefaultAckWait
	DefaultMaxDeliver     = engine.DefaultMaxDeliver
	DefaultTaskTimeout    = engine.DefaultTaskTimeout
	DefaultStepTimeout    = engine.DefaultStepTimeout
	DefaultAskWait        = engine.DefaultAskWait
	DefaultBundleCacheTTL = engine.DefaultBundleCacheTTL
)

// New returns a Runner; Start launches its browsers and its task loop. It fails when
// cfg names no pool or no Chromium is found.
func New(cfg Config, deps Deps) (*Runner, error) { return engine.New(cfg, deps) }

// ConsumerName is the durable pull consumer the runners of a pool share on LK_TASKS.
func ConsumerName(pool string) string { return engine.ConsumerName(pool) }

// LocalRun is one recipe run in a local browser, without the services: the loop in
// which users write recipes (latchkey try). Runner.RunLocal runs it.
type LocalRun = engine.LocalRun

// LocalResult is how a LocalRun ended: the check's outcome, the output, the failure
// and the state the browser ended with.
type LocalResult = engine.LocalResult
