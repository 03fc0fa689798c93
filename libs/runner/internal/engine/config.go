package engine

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"go.opentelemetry.io/otel/metric"
	"log/slog"
	"os"
	"os/exec"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// Defaults of Config.
const (
	DefaultContexts       = 2
	DefaultLoginContexts  = 1
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
	// LoginContexts is how many tasks of the login lane (logins and the verification
	// of their state, bus.LoginTaskSubject) run at once, beyond Contexts: capacity kept
	// for them, so a login never waits for API work.
	LoginContexts int
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
	if c.Contexts < 0 || c.LoginContexts < 0 || c.Browsers < 0 || c.WarmMax < 0 {
		return c, errors.New("runner: contexts, login contexts, browsers and warm max must not be negative")
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
	def(&c.LoginContexts, DefaultLoginContexts)
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
	States  sdk.StateStore
	Vault   sdk.Vault
	Bundles sdk.BundleStore
	// Meter receives the runner's metrics (metrics.go); nil: none.
	Meter metric.MeterProvider
}
