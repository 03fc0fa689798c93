// Package runner is the browser-runner service: Chromium processes, isolated browser
// contexts bound to AuthSessions and the recipe interpreter (DESIGN.md sections 3 and
// 7). It is the runner SDK (libs/runner) with only the recipe interpreter, wired to the
// registry and the vault over gRPC. It has no public API: it takes tasks from LK_TASKS
// and answers on LK_RESULTS.
package runner

import (
	"context"
	"errors"
	"fmt"
	"go.opentelemetry.io/otel/metric"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/latchkey/latchkey/libs/bus"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	sdk "github.com/latchkey/latchkey/libs/runner"
	"github.com/latchkey/latchkey/libs/server"
)

// HealthName is the runner's entry in gRPC health and /healthz.
const HealthName = "latchkey.browser-runner"

// Config configures the runner.
type Config struct {
	// Pool is the task pool the runner takes from (lk.tasks.<pool>).
	Pool string
	// Contexts bounds the browser contexts kept open.
	Contexts int
	// LoginContexts is how many login-lane tasks run at once beyond Contexts.
	LoginContexts int
	// ChromiumPath is the browser binary; empty auto-detects.
	ChromiumPath string
	// LiveKey seals the live view of recordings (bus.DeriveKey of the internal token
	// with bus.LiveKeyPurpose); empty: this runner hosts no recordings.
	LiveKey []byte
}

// Deps are what the runner needs from its process.
type Deps struct {
	Logger   *slog.Logger
	Tracer   trace.TracerProvider
	JS       jetstream.JetStream
	Registry registryv1.SessionStateServiceClient
	Vault    vaultv1.VaultServiceClient
	// Meter receives the runner's metrics; nil: none.
	Meter metric.MeterProvider
}

// Service is the browser runner.
type Service struct {
	cfg    Config
	deps   Deps
	srv    *server.Server
	runner *sdk.Runner
}

// New returns the runner service.
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.Logger == nil || deps.Tracer == nil || deps.JS == nil || deps.Registry == nil || deps.Vault == nil {
		return nil, errors.New("runner: logger, tracer, jetstream, registry and vault clients are required")
	}
	if cfg.Pool == "" || cfg.Contexts < 1 {
		return nil, fmt.Errorf("runner: need a pool and at least one context, got pool %q and %d contexts", cfg.Pool, cfg.Contexts)
	}
	backend := sdk.GRPC{Registry: deps.Registry, Vault: deps.Vault}
	r, err := sdk.New(sdk.Config{Pool: cfg.Pool, Contexts: cfg.Contexts, LoginContexts: cfg.LoginContexts, ChromiumPath: cfg.ChromiumPath, LiveKey: cfg.LiveKey}, sdk.Deps{
		Logger: deps.Logger, Tracer: deps.Tracer, JS: deps.JS, States: backend, Vault: backend, Bundles: backend, Meter: deps.Meter,
	})
	if err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, deps: deps, runner: r}, nil
}

// Register adds the runner's health entry to srv; it serves no gRPC API.
func (s *Service) Register(srv *server.Server) {
	s.srv = srv
	srv.Track(HealthName)
}

// Start checks the task and result streams, starts Chromium and the task loop, and
// reports the runner healthy.
func (s *Service) Start(ctx context.Context) error {
	if err := bus.CheckReady(ctx, s.deps.JS, bus.Needs{Streams: []string{bus.StreamTasks, bus.StreamResults}, Buckets: []string{}}); err != nil {
		return fmt.Errorf("starting runner: %w", err)
	}
	if err := s.runner.Start(ctx); err != nil {
		return err
	}
	s.srv.SetServing(HealthName, true)
	return nil
}

// Stop reports the runner unhealthy, stops taking tasks, lets running ones finish
// within ctx and closes the browsers.
func (s *Service) Stop(ctx context.Context) error {
	if s.srv != nil {
		s.srv.SetServing(HealthName, false)
	}
	return s.runner.Stop(ctx)
}
