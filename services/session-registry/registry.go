// Package registry is the session-registry service: projects, API keys, automation
// bundles, AuthSessions with their state machine, and encrypted storage states
// (DESIGN.md sections 1-6).
package registry

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

// Config configures the registry.
type Config struct{}

// Deps are what the registry needs from its process.
type Deps struct {
	Logger *slog.Logger
	Tracer trace.TracerProvider
	JS     jetstream.JetStream
	// Vault seals credentials and storage states.
	Vault vaultv1.VaultServiceClient
	// Runs starts AUTHSESSION_CREATE and UPDATE Runs on the scheduler.
	Runs latchkeyv1.RunServiceClient
}

// Service is the session registry.
type Service struct {
	cfg  Config
	deps Deps
	srv  *server.Server
}

type (
	projects struct {
		latchkeyv1.UnimplementedProjectServiceServer
	}
	automations struct {
		latchkeyv1.UnimplementedAutomationServiceServer
	}
	authSessions struct {
		latchkeyv1.UnimplementedAuthSessionServiceServer
	}
	sessionState struct {
		registryv1.UnimplementedSessionStateServiceServer
	}
)

// New returns the registry service.
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.Logger == nil || deps.Tracer == nil || deps.JS == nil || deps.Vault == nil || deps.Runs == nil {
		return nil, errors.New("registry: logger, tracer, jetstream, vault and runs clients are required")
	}
	return &Service{cfg: cfg, deps: deps}, nil
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
	srv.Register(&latchkeyv1.ProjectService_ServiceDesc, projects{}, server.PolicyPublic, s.deps.Tracer)
	srv.Register(&latchkeyv1.AutomationService_ServiceDesc, automations{}, server.PolicyPublic, s.deps.Tracer)
	srv.Register(&latchkeyv1.AuthSessionService_ServiceDesc, authSessions{}, server.PolicyPublic, s.deps.Tracer)
	srv.Register(&registryv1.SessionStateService_ServiceDesc, sessionState{}, server.PolicyInternal, s.deps.Tracer)
}

// Start checks the registry's buckets and reports it healthy.
func (s *Service) Start(ctx context.Context) error {
	needs := bus.Needs{
		Streams: []string{bus.StreamEvents},
		Buckets: []string{bus.BucketProjects, bus.BucketAPIKeys, bus.BucketAutomations, bus.BucketSessions, bus.BucketStates},
	}
	if err := bus.CheckReady(ctx, s.deps.JS, needs); err != nil {
		return fmt.Errorf("starting registry: %w", err)
	}
	for _, d := range s.descs() {
		s.srv.SetServing(d.ServiceName, true)
	}
	return nil
}

// Stop reports the registry unhealthy.
func (s *Service) Stop(context.Context) error {
	for _, d := range s.descs() {
		s.srv.SetServing(d.ServiceName, false)
	}
	return nil
}
