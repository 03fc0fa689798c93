// Package vault is the credential-vault service: the only holder of master keys. It
// stores credentials, encrypts storage states as a service, and audits every decrypt
// (DESIGN.md sections 2 and 6). Its gRPC API is internal to Latchkey.
package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/latchkey/latchkey/libs/bus"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/server"
)

// Config configures the vault.
type Config struct{}

// Deps are what the vault needs from its process.
type Deps struct {
	Logger *slog.Logger
	Tracer trace.TracerProvider
	JS     jetstream.JetStream
}

// Service is the credential vault.
type Service struct {
	vaultv1.UnimplementedVaultServiceServer
	cfg  Config
	deps Deps
	srv  *server.Server
}

// New returns the vault service.
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.Logger == nil || deps.Tracer == nil || deps.JS == nil {
		return nil, errors.New("vault: logger, tracer and jetstream are required")
	}
	return &Service{cfg: cfg, deps: deps}, nil
}

// Register adds the vault's gRPC API to srv, internal only.
func (s *Service) Register(srv *server.Server) {
	s.srv = srv
	srv.Register(&vaultv1.VaultService_ServiceDesc, s, server.PolicyInternal, s.deps.Tracer)
}

// Start checks the vault's storage and reports it healthy.
func (s *Service) Start(ctx context.Context) error {
	if err := bus.CheckReady(ctx, s.deps.JS, bus.Needs{Streams: []string{bus.StreamAudit}, Buckets: []string{bus.BucketSecrets}}); err != nil {
		return fmt.Errorf("starting vault: %w", err)
	}
	s.srv.SetServing(vaultv1.VaultService_ServiceDesc.ServiceName, true)
	return nil
}

// Stop reports the vault unhealthy; it holds nothing else to release.
func (s *Service) Stop(context.Context) error {
	s.srv.SetServing(vaultv1.VaultService_ServiceDesc.ServiceName, false)
	return nil
}
