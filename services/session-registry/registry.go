// Package registry is the session-registry service: projects, API keys, automation
// bundles, AuthSessions with their state machine, and encrypted storage states
// (DESIGN.md sections 1-6). The code lives in internal/store (JetStream records) and
// internal/api (the gRPC services); docs/session-registry.md describes both.
package registry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	"github.com/latchkey/latchkey/services/session-registry/internal/api"
	"github.com/latchkey/latchkey/services/session-registry/internal/recorder"
	"github.com/latchkey/latchkey/services/session-registry/internal/store"
)

// Config configures the registry.
type Config struct {
	// AdminKey lets AuthenticateApiKey tell other services that a key is the admin key.
	AdminKey string
	// States tunes how storage states are cached and kept; zero values take the
	// defaults.
	States StateOptions
	// InternalToken is the secret the services share: the recorder's URL-signing and
	// live-view keys are derived from it.
	InternalToken string
	// RecorderSecret, when set, keys the recorder's URLs and live view instead of
	// InternalToken, so a deployment authenticating its services with mTLS keeps a
	// secret of its own for them. Every registry and runner needs the same one.
	RecorderSecret string
	// PublicURL is the base of recorder URLs; empty: http://<the HTTP listener>.
	PublicURL string
	// RecorderTTL is how long a recorder URL lives; zero: 10 minutes.
	RecorderTTL time.Duration
}

// StateOptions tune how the registry caches and keeps storage states. Zero values take
// the defaults.
type StateOptions struct {
	// CacheTTL is how long a state's ciphertext stays in the cache; zero: 5 minutes.
	CacheTTL time.Duration
	// InlineMaxBytes is the largest ciphertext kept in the LK_STATES bucket; larger
	// ones go to the object store LK_STATES_OBJ. Zero: 256 KiB.
	InlineMaxBytes int
	// KeepRevisions is how many newest state revisions are kept, besides the last
	// known-good one; zero: 3.
	KeepRevisions int
}

// storeOptions translates o into the store's options.
func (o StateOptions) storeOptions() store.Options {
	return store.Options{StateCacheTTL: o.CacheTTL, InlineMaxBytes: o.InlineMaxBytes, KeepRevisions: o.KeepRevisions}
}

// Deps are what the registry needs from its process.
type Deps struct {
	Logger *slog.Logger
	Tracer trace.TracerProvider
	JS     jetstream.JetStream
	// Cache holds storage-state ciphertext for a short while; nil: an in-process one.
	Cache cache.Cache
	// Vault seals credentials and storage states.
	Vault vaultv1.VaultServiceClient
	// Runs starts AUTHSESSION_CREATE, UPDATE and RECORD Runs on the scheduler.
	Runs latchkeyv1.RunServiceClient
	// NC carries the recorder's live view (core NATS).
	NC *nats.Conn
	// Meter receives the registry's metrics (metrics.go); nil: none.
	Meter metric.MeterProvider
}

// Service is the session registry.
type Service struct {
	cfg      Config
	deps     Deps
	api      *api.API
	recorder *recorder.Recorder
	srv      *server.Server
}

// New returns the registry service.
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.Logger == nil || deps.Tracer == nil || deps.JS == nil || deps.NC == nil || deps.Vault == nil || deps.Runs == nil {
		return nil, errors.New("registry: logger, tracer, jetstream, nats, vault and runs clients are required")
	}
	if deps.Cache == nil {
		deps.Cache = cache.NewResilient(cache.NewMemory(cache.MemoryOptions{}), deps.Logger)
	}
	s := &Service{cfg: cfg, deps: deps}
	rec, err := recorder.New(recorder.Config{Secret: cmp.Or(cfg.RecorderSecret, cfg.InternalToken), PublicURL: cfg.PublicURL, TTL: cfg.RecorderTTL},
		recorder.Deps{Log: deps.Logger, NC: deps.NC, Runs: deps.Runs, ListenAddr: func() string { return s.srv.HTTPAddr() }})
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	s.recorder = rec
	s.api = api.New(api.Deps{Log: deps.Logger, Vault: deps.Vault, Runs: deps.Runs, AdminKey: cfg.AdminKey, Recorder: rec})
	return s, nil
}

func (s *Service) descs() []*grpc.ServiceDesc {
	return []*grpc.ServiceDesc{
		&latchkeyv1.ProjectService_ServiceDesc,
		&latchkeyv1.AutomationService_ServiceDesc,
		&latchkeyv1.AuthSessionService_ServiceDesc,
		&registryv1.SessionStateService_ServiceDesc,
	}
}

// Register adds the public APIs and the internal SessionStateService to srv.
func (s *Service) Register(srv *server.Server) {
	s.srv = srv
	srv.Register(&latchkeyv1.ProjectService_ServiceDesc, api.Projects{API: s.api}, server.PolicyPublic, s.deps.Tracer)
	srv.Register(&latchkeyv1.AutomationService_ServiceDesc, api.Automations{API: s.api}, server.PolicyPublic, s.deps.Tracer)
	srv.Register(&latchkeyv1.AuthSessionService_ServiceDesc, api.AuthSessions{API: s.api}, server.PolicyPublic, s.deps.Tracer)
	srv.Register(&registryv1.SessionStateService_ServiceDesc, api.SessionState{API: s.api}, server.PolicyInternal, s.deps.Tracer)
	s.recorder.Mount(srv.Handle)
}

// Start opens the registry's buckets and reports it healthy.
func (s *Service) Start(ctx context.Context) error {
	needs := bus.Needs{
		Streams: []string{bus.StreamEvents},
		Buckets: []string{bus.BucketProjects, bus.BucketAPIKeys, bus.BucketAutomations, bus.BucketSessions, bus.BucketStates, bus.BucketRecordings},
	}
	if err := bus.CheckReady(ctx, s.deps.JS, needs); err != nil {
		return fmt.Errorf("starting registry: %w", err)
	}
	st, err := store.Open(ctx, s.deps.JS, s.deps.Cache, s.deps.Logger, s.deps.Tracer, s.cfg.States.storeOptions())
	if err != nil {
		return fmt.Errorf("starting registry: %w", err)
	}
	s.api.SetStore(st)
	if err := registerMetrics(s.deps.Meter, st); err != nil {
		return fmt.Errorf("starting registry: %w", err)
	}
	if err := s.recorder.Open(ctx, s.deps.JS); err != nil {
		return fmt.Errorf("starting registry: %w", err)
	}
	for _, d := range s.descs() {
		s.srv.SetServing(d.ServiceName, true)
	}
	return nil
}

// Stop reports the registry unhealthy and ends the recorder's live streams.
func (s *Service) Stop(context.Context) error {
	s.recorder.Close()
	for _, d := range s.descs() {
		s.srv.SetServing(d.ServiceName, false)
	}
	return nil
}
