// Package scheduler is the scheduler service: Runs and their orchestration (validate,
// recreate, execute), Jobs, proactive refresh, back-off and circuit breaking
// (DESIGN.md section 3).
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/latchkey/latchkey/libs/bus"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/server"
)

// Config configures the scheduler.
type Config struct {
	// Pool is the runner pool tasks go to.
	Pool string
}

// Deps are what the scheduler needs from its process.
type Deps struct {
	Logger   *slog.Logger
	Tracer   trace.TracerProvider
	JS       jetstream.JetStream
	Registry registryv1.SessionStateServiceClient
	Vault    vaultv1.VaultServiceClient
}

// Service is the scheduler.
type Service struct {
	cfg  Config
	deps Deps
	srv  *server.Server
}

type (
	runs struct {
		latchkeyv1.UnimplementedRunServiceServer
	}
	jobs struct {
		latchkeyv1.UnimplementedJobServiceServer
	}
)

// New returns the scheduler service.
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.Logger == nil || deps.Tracer == nil || deps.JS == nil || deps.Registry == nil || deps.Vault == nil {
		return nil, errors.New("scheduler: logger, tracer, jetstream, registry and vault clients are required")
	}
	if cfg.Pool == "" {
		return nil, errors.New("scheduler: runner pool is empty")
	}
	return &Service{cfg: cfg, deps: deps}, nil
}

func (s *Service) descs() []*grpc.ServiceDesc {
	return []*grpc.ServiceDesc{&latchkeyv1.RunService_ServiceDesc, &latchkeyv1.JobService_ServiceDesc}
}

// Register adds RunService and JobService to srv.
func (s *Service) Register(srv *server.Server) {
	s.srv = srv
	srv.Register(&latchkeyv1.RunService_ServiceDesc, runs{}, server.PolicyPublic, s.deps.Tracer)
	srv.Register(&latchkeyv1.JobService_ServiceDesc, jobs{}, server.PolicyPublic, s.deps.Tracer)
}

// Start checks the scheduler's streams and buckets and reports it healthy.
func (s *Service) Start(ctx context.Context) error {
	needs := bus.Needs{
		Streams: []string{bus.StreamRuns, bus.StreamTasks, bus.StreamResults, bus.StreamEvents},
		Buckets: []string{bus.BucketRuns, bus.BucketJobs, bus.BucketLeases},
	}
	if err := bus.CheckReady(ctx, s.deps.JS, needs); err != nil {
		return fmt.Errorf("starting scheduler: %w", err)
	}
	for _, d := range s.descs() {
		s.srv.SetServing(d.ServiceName, true)
	}
	return nil
}

// Stop reports the scheduler unhealthy.
func (s *Service) Stop(context.Context) error {
	for _, d := range s.descs() {
		s.srv.SetServing(d.ServiceName, false)
	}
	return nil
}
