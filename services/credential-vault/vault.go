// Package vault is the credential-vault service: the only holder of master keys. It
// stores credentials, encrypts storage states as a service, and audits every decrypt
// (DESIGN.md sections 2 and 6). Its gRPC API is internal to Latchkey. How it works is
// in docs/credential-vault.md.
package vault

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"github.com/latchkey/latchkey/libs/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/latchkey/latchkey/libs/bus"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/services/credential-vault/internal/api"
	"github.com/latchkey/latchkey/services/credential-vault/internal/audit"
	"github.com/latchkey/latchkey/services/credential-vault/internal/keyring"
	"github.com/latchkey/latchkey/services/credential-vault/internal/store"
)

// Config configures the vault. It redacts itself when printed or logged.
type Config struct {
	// Keys is the root key ring, "v1:base64,v2:base64" (see LoadKeys). Master key
	// versions are derived from these keys.
	Keys string
	// Rand is the source of every key, nonce and id; nil means crypto/rand. Tests
	// inject others.
	Rand io.Reader
	// Now is the clock of audit events and key versions; nil means time.Now.
	Now func() time.Time
}

// String implements fmt.Stringer without key material.
func (c Config) String() string { return fmt.Sprintf("vault config (keys set: %t)", c.Keys != "") }

// GoString keeps %#v from printing key material.
func (c Config) GoString() string { return c.String() }

// LogValue implements slog.LogValuer without key material.
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Deps are what the vault needs from its process.
type Deps struct {
	Logger *slog.Logger
	Tracer trace.TracerProvider
	JS     jetstream.JetStream
	// Meter receives the vault's metrics; nil: none.
	Meter metric.MeterProvider
}

// Service is the credential vault.
type Service struct {
	cfg   Config
	deps  Deps
	roots keyring.Roots
	api   *api.Server
	keys  *keyring.Keeper
	// opened is keys once Start opened them, for the metrics' scrapes.
	opened atomic.Pointer[keyring.Keeper]
	srv    *server.Server
}

// New checks the configuration and returns the vault service; Start opens its key
// ring.
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.Logger == nil || deps.Tracer == nil || deps.JS == nil {
		return nil, errors.New("vault: logger, tracer and jetstream are required")
	}
	if cfg.Keys == "" {
		return nil, ErrNoKeys
	}
	roots, err := keyring.ParseRoots(cfg.Keys)
	if err != nil {
		return nil, err
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, deps: deps, roots: roots}, nil
}

// Register adds the vault's gRPC API to srv, internal only. Calls that arrive before
// Start get Unavailable.
func (s *Service) Register(srv *server.Server) {
	s.srv = srv
	tracer := s.deps.Tracer.Tracer("github.com/latchkey/latchkey/services/credential-vault")
	s.api = api.New(api.Deps{
		Audit:  audit.New(s.deps.JS, tracer, bus.Propagator(), s.cfg.Rand),
		Rand:   s.cfg.Rand,
		Now:    s.cfg.Now,
		Tracer: tracer,
		Logger: s.deps.Logger,
		Count:  s.metrics(),
	})
	srv.Register(&vaultv1.VaultService_ServiceDesc, s.api, server.PolicyInternal, s.deps.Tracer)
}

// metrics registers the vault's instruments: operations by kind of blob, and the key
// version new blobs are sealed with. It returns the operation counter.
func (s *Service) metrics() func(ctx context.Context, op, kind string) {
	m := telemetry.Meter(s.deps.Meter, "github.com/latchkey/latchkey/services/credential-vault")
	ops, err := m.Int64Counter("latchkey.vault.operations", metric.WithUnit("{operation}"),
		metric.WithDescription("Vault operations that succeeded: encrypt, decrypt (each audited), by kind of blob"))
	if err != nil {
		s.deps.Logger.Warn("vault metrics unavailable", "error", err)
		return nil
	}
	if _, err := m.Int64ObservableGauge("latchkey.vault.key_version", metric.WithUnit("{version}"),
		metric.WithDescription("The data-key version new blobs are sealed with"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			if k := s.opened.Load(); k != nil {
				o.Observe(int64(k.State().Current))
			}
			return nil
		})); err != nil {
		s.deps.Logger.Warn("vault metrics unavailable", "error", err)
	}
	return func(ctx context.Context, op, kind string) {
		ops.Add(ctx, 1, metric.WithAttributes(attribute.String("operation", op), attribute.String("kind", kind)))
	}
}

// Start checks the vault's storage, opens the key ring (creating it on first start)
// and reports the vault healthy.
func (s *Service) Start(ctx context.Context) error {
	if err := bus.CheckReady(ctx, s.deps.JS, bus.Needs{Streams: []string{bus.StreamAudit}, Buckets: []string{bus.BucketSecrets}}); err != nil {
		return fmt.Errorf("starting vault: %w", err)
	}
	kv, err := s.deps.JS.KeyValue(ctx, bus.BucketSecrets)
	if err != nil {
		return fmt.Errorf("starting vault: %w", err)
	}
	s.keys, err = keyring.Open(ctx, kv, keyring.Options{Roots: s.roots, Rand: s.cfg.Rand, Now: s.cfg.Now, Logger: s.deps.Logger})
	if err != nil {
		return fmt.Errorf("starting vault: %w", err)
	}
	s.api.Open(s.keys, store.New(kv, s.cfg.Rand, s.cfg.Now))
	s.opened.Store(s.keys)
	st := s.keys.State()
	s.deps.Logger.InfoContext(ctx, "vault ready", "current_version", st.Current, "min_decryption_version", st.Min, "root_versions", s.roots.Versions())
	s.srv.SetServing(vaultv1.VaultService_ServiceDesc.ServiceName, true)
	return nil
}

// Stop reports the vault unhealthy and stops following the key ring.
func (s *Service) Stop(context.Context) error {
	if s.srv != nil {
		s.srv.SetServing(vaultv1.VaultService_ServiceDesc.ServiceName, false)
	}
	if s.keys != nil {
		s.keys.Close()
	}
	return nil
}
