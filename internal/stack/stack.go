// Package stack wires Latchkey's services into a running process: NATS (embedded or
// external), JetStream streams and buckets, the cache, telemetry, one server base, and
// the chosen services with gRPC clients to each other. `latchkey dev` and
// `latchkey serve` use it, and so do the end-to-end tests (internal/stack/stacktest).
package stack

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/cache"
	"github.com/latchkey/latchkey/libs/config"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/libs/telemetry"
	runner "github.com/latchkey/latchkey/services/browser-runner"
	vault "github.com/latchkey/latchkey/services/credential-vault"
	scheduler "github.com/latchkey/latchkey/services/scheduler"
	registry "github.com/latchkey/latchkey/services/session-registry"
)

// ServiceNames are the services a stack can run, in start order: each may depend on
// the ones before it being reachable.
var ServiceNames = []string{"vault", "registry", "scheduler", "runner"}

// service is what the stack needs of each service package.
type service interface {
	Register(*server.Server)
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// Stack is a running set of services with everything they share. Each field is
// released by Shutdown in the reverse order of start.
type Stack struct {
	cfg      *config.Config
	log      *slog.Logger
	embedded *bus.Embedded
	nc       *nats.Conn
	js       jetstream.JetStream
	cache    *cache.Resilient
	metrics  *telemetry.Metrics
	tracers  []*sdktrace.TracerProvider
	conns    []*grpc.ClientConn
	exporter sdktrace.SpanExporter
	srv      *server.Server
	// serverTLS and peerTLS are the listeners' TLS and how peers are dialled; nil
	// without -tls-cert.
	serverTLS, peerTLS *tls.Config
	services           []service // in start order
	// localKeys verifies project API keys with the registry's own key store when the
	// registry runs in this process; nil otherwise.
	localKeys server.KeyVerifier
	// stopWatches end background watches (API key revocations) at shutdown.
	stopWatches []context.CancelFunc
}

// Options are what a stack takes besides its configuration.
type Options struct {
	// Env looks up OTEL_* variables.
	Env    config.Env
	Logger *slog.Logger
	// SpanExporter, if set, receives every service's spans (tests use an in-memory one).
	SpanExporter sdktrace.SpanExporter
}

// Start starts the named services in one process. With no NATS URL it runs an
// embedded server (dev). On error everything already started is stopped again.
func Start(ctx context.Context, cfg *config.Config, names []string, opts Options) (st *Stack, err error) {
	log, env := opts.Logger, opts.Env
	if env == nil {
		env = config.MapEnv(nil)
	}
	st = &Stack{cfg: cfg, log: log, exporter: opts.SpanExporter}
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
			defer cancel()
			st.Shutdown(sctx)
			st = nil
		}
	}()
	if err := st.startNATS(ctx); err != nil {
		return st, err
	}
	// go-redis logs through a package variable; route it to our logger once.
	redis.SetLogger(cache.RedisLogger{Logger: log})
	ccfg := cache.Config{URL: cfg.RedisURL, Logger: log}
	if cfg.RedisTLSCA != "" {
		if ccfg.RootCAs, err = server.LoadCAPool(cfg.RedisTLSCA); err != nil {
			return st, fmt.Errorf("redis TLS: %w", err)
		}
	}
	if st.cache, err = cache.Open(ctx, ccfg); err != nil {
		return st, fmt.Errorf("opening cache: %w", err)
	}
	if cfg.TLSCert != "" {
		files := server.TLSFiles{Cert: cfg.TLSCert, Key: cfg.TLSKey, CA: cfg.TLSCA}
		if st.serverTLS, err = server.ServerTLSConfig(files); err != nil {
			return st, err
		}
		// Peers are dialled with TLS, verified with the CA, presenting our certificate.
		if st.peerTLS, err = server.ClientTLSConfig(cfg.TLSCA, cfg.TLSCert, cfg.TLSKey); err != nil {
			return st, err
		}
	}
	if st.metrics, err = telemetry.NewMetrics("latchkey"); err != nil {
		return st, err
	}
	auth := server.NewAuthenticator(cfg.InternalToken, cfg.AdminKey, nil)
	st.srv, err = server.New(server.Options{
		GRPCAddr: cfg.GRPCAddr, HTTPAddr: cfg.HTTPAddr, Logger: log, Auth: auth,
		MeterProvider: st.metrics.Provider, Metrics: st.metrics.Registry, Propagator: telemetry.Propagator(),
		TLS: st.serverTLS,
	})
	if err != nil {
		return st, err
	}
	for _, name := range names {
		svc, err := st.newService(ctx, name, env)
		if err != nil {
			return st, fmt.Errorf("creating %s: %w", name, err)
		}
		svc.Register(st.srv)
		st.services = append(st.services, svc)
	}
	if err := st.setKeyVerifier(auth); err != nil {
		return st, err
	}
	if err := st.srv.Start(); err != nil {
		return st, err
	}
	for i, svc := range st.services {
		if err := svc.Start(ctx); err != nil {
			return st, fmt.Errorf("starting %s: %w", names[i], err)
		}
	}
	return st, nil
}

func (st *Stack) startNATS(ctx context.Context) error {
	url := st.cfg.NATSURL
	if url == "" {
		host, port, err := splitHostPort(st.cfg.EmbeddedNATSAddr)
		if err != nil {
			return fmt.Errorf("embedded nats address: %w", err)
		}
		st.embedded, err = bus.StartEmbedded(ctx, bus.EmbeddedConfig{
			Host: host, Port: port, StoreDir: filepath.Join(st.cfg.DataDir, "nats"), Logger: st.log.With("component", "nats"),
		})
		if err != nil {
			return err
		}
		url = st.embedded.ClientURL()
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var err error
	if st.nc, st.js, err = bus.Connect(cctx, st.natsOptions(url)); err != nil {
		if errors.Is(err, nats.ErrAuthorization) {
			return fmt.Errorf("%w (NATS credentials from %s)", err, st.cfg.NATSCredentialSettings())
		}
		return err
	}
	if err := bus.Ensure(ctx, st.js, bus.Options{Replicas: st.cfg.NATSReplicas, Logger: st.log}); err != nil {
		if errors.Is(err, bus.ErrTooManyReplicas) {
			return fmt.Errorf("-nats-replicas (LATCHKEY_NATS_REPLICAS) is %d, more than the NATS servers hold: set it to 1 on one server, or at most the number of servers in the JetStream cluster: %w",
				st.cfg.NATSReplicas, err)
		}
		return fmt.Errorf("declaring streams and buckets: %w", err)
	}
	return nil
}

// natsOptions are the stack's NATS connection options for the server at url. The
// credential and TLS settings are the external server's: the embedded one has none.
func (st *Stack) natsOptions(url string) bus.ConnectOptions {
	c := st.cfg
	if c.NATSURL == "" {
		return bus.ConnectOptions{URL: url, Name: "latchkey", Logger: st.log}
	}
	return bus.ConnectOptions{
		URL: url, Name: "latchkey", Logger: st.log,
		CredsFile: c.NATSCreds, NKeyFile: c.NATSNKey, Token: c.NATSToken, User: c.NATSUser, Password: c.NATSPassword,
		TLSCA: c.NATSTLSCA, TLSCert: c.NATSTLSCert, TLSKey: c.NATSTLSKey,
	}
}

// tracer returns a new tracer provider for one service, flushed at shutdown.
func (st *Stack) tracer(ctx context.Context, serviceName string, env config.Env) (*sdktrace.TracerProvider, error) {
	tc := telemetry.TraceConfig{ServiceName: serviceName, Env: env}
	if st.exporter != nil {
		tc.Exporters = []sdktrace.SpanExporter{st.exporter}
	}
	tp, err := telemetry.NewTracerProvider(ctx, tc)
	if err != nil {
		return nil, err
	}
	st.tracers = append(st.tracers, tp)
	return tp, nil
}

// dial connects the service `from` to a peer's gRPC address with the internal token,
// tracing the client side under the caller's name.
func (st *Stack) dial(addr, from string, tp *sdktrace.TracerProvider) (*grpc.ClientConn, error) {
	cc, err := server.Dial(addr, server.DialOptions{
		Token: st.cfg.InternalToken, Service: from, TracerProvider: tp, Propagator: telemetry.Propagator(),
		TLS: st.peerTLS,
	})
	if err != nil {
		return nil, err
	}
	st.conns = append(st.conns, cc)
	return cc, nil
}

func (st *Stack) newService(ctx context.Context, name string, env config.Env) (service, error) {
	cfg := st.cfg
	svcName := map[string]string{
		"vault": telemetry.VaultService, "registry": telemetry.RegistryService,
		"scheduler": telemetry.SchedulerService, "runner": telemetry.RunnerService,
	}[name]
	if svcName == "" {
		return nil, fmt.Errorf("unknown service %q", name)
	}
	tp, err := st.tracer(ctx, svcName, env)
	if err != nil {
		return nil, err
	}
	log := st.log.With("service", svcName)
	// A peer with no address of its own runs in this process, behind our listener.
	conn := func(addr string) (*grpc.ClientConn, error) {
		if addr == "" {
			addr = st.srv.GRPCAddr()
		}
		return st.dial(addr, svcName, tp)
	}
	if name == "vault" {
		// Only a stack on its own embedded NATS (dev, tests) may generate a root key:
		// the key file then sits beside the store it protects. With external NATS,
		// replicas need the same configured keys.
		src := vault.KeySource{Keys: cfg.VaultKeys, File: cfg.VaultKeyFile}
		if cfg.NATSURL == "" {
			src.DevDir = cfg.DataDir
		}
		keys, err := vault.LoadKeys(src, log)
		if err != nil {
			return nil, err
		}
		return vault.New(vault.Config{Keys: keys}, vault.Deps{Logger: log, Tracer: tp, JS: st.js, Meter: st.metrics.Provider})
	}
	// Every other service talks to its peers; gRPC clients connect lazily, so a peer
	// a service never calls costs nothing.
	var p [3]*grpc.ClientConn
	for i, addr := range []string{cfg.VaultAddr, cfg.RegistryAddr, cfg.SchedulerAddr} {
		if p[i], err = conn(addr); err != nil {
			return nil, err
		}
	}
	vaultClient, registryClient := vaultv1.NewVaultServiceClient(p[0]), registryv1.NewSessionStateServiceClient(p[1])
	switch name {
	case "registry":
		r, err := registry.New(registry.Config{
			AdminKey: cfg.AdminKey, InternalToken: cfg.InternalToken, RecorderSecret: cfg.RecorderSecret, PublicURL: cfg.PublicURL, RecorderTTL: cfg.RecorderTTL,
		}, registry.Deps{
			Logger: log, Tracer: tp, JS: st.js, NC: st.nc, Cache: st.cache,
			Vault: vaultClient, Runs: latchkeyv1.NewRunServiceClient(p[2]), Meter: st.metrics.Provider,
		})
		if err != nil {
			return nil, err
		}
		st.localKeys = r.KeyVerifier()
		return r, nil
	case "scheduler":
		return scheduler.New(scheduler.Config{
			Pool: cfg.RunnerPool, RefreshInterval: cfg.RefreshInterval,
			SessionLoginBudget: cfg.SessionLoginBudget, OriginLoginBudget: cfg.OriginLoginBudget,
		}, scheduler.Deps{
			Logger: log, Tracer: tp, NC: st.nc, JS: st.js, Cache: st.cache,
			Registry: registryClient, Vault: vaultClient, Meter: st.metrics.Provider,
		})
	default: // runner
		return runner.New(runner.Config{
			Pool: cfg.RunnerPool, Contexts: cfg.RunnerContexts, LoginContexts: cfg.RunnerLoginContexts, ChromiumPath: cfg.ChromiumPath,
			LiveKey: bus.DeriveKey(cmp.Or(cfg.RecorderSecret, cfg.InternalToken), bus.LiveKeyPurpose),
		}, runner.Deps{
			Logger: log, Tracer: tp, JS: st.js,
			Registry: registryClient, Vault: vaultClient, Meter: st.metrics.Provider,
		})
	}
}

// setKeyVerifier lets the server verify project API keys: with the registry's own key
// store when the registry runs in this process, else by asking the registry's
// AuthenticateApiKey (answers cached in process for a few seconds).
func (st *Stack) setKeyVerifier(auth *server.Authenticator) error {
	if st.localKeys != nil {
		auth.SetKeyVerifier(st.localKeys)
		return nil
	}
	addr := st.cfg.RegistryAddr
	if addr == "" {
		addr = st.srv.GRPCAddr()
	}
	cc, err := server.Dial(addr, server.DialOptions{Token: st.cfg.InternalToken, Service: "latchkey-auth", TLS: st.peerTLS})
	if err != nil {
		return fmt.Errorf("dialing the registry to verify api keys: %w", err)
	}
	st.conns = append(st.conns, cc)
	keys, err := st.js.KeyValue(context.Background(), bus.BucketAPIKeys)
	if err != nil {
		return fmt.Errorf("opening the api key bucket to watch revocations: %w", err)
	}
	v := registry.NewRemoteKeyVerifier(registryv1.NewSessionStateServiceClient(cc), registry.RemoteVerifierOptions{Keys: keys})
	ctx, cancel := context.WithCancel(context.Background())
	st.stopWatches = append(st.stopWatches, cancel)
	if err := v.WatchRevocations(ctx); err != nil {
		return err
	}
	auth.SetKeyVerifier(v)
	return nil
}

// Shutdown stops everything in reverse start order under ctx's deadline: services,
// then gRPC and HTTP, client connections, NATS (drained), the embedded server, the
// cache, and last the tracers (flushing spans).
func (st *Stack) Shutdown(ctx context.Context) {
	var errs []error
	for _, stop := range st.stopWatches {
		stop()
	}
	for i := len(st.services) - 1; i >= 0; i-- {
		errs = append(errs, st.services[i].Stop(ctx))
	}
	if st.srv != nil {
		errs = append(errs, st.srv.Shutdown(ctx))
	}
	for _, cc := range st.conns {
		errs = append(errs, cc.Close())
	}
	if st.nc != nil {
		errs = append(errs, drain(ctx, st.nc))
	}
	if st.embedded != nil {
		st.embedded.Shutdown()
	}
	if st.cache != nil {
		errs = append(errs, st.cache.Close())
	}
	if st.metrics != nil {
		errs = append(errs, st.metrics.Provider.Shutdown(ctx))
	}
	for _, tp := range st.tracers {
		errs = append(errs, tp.Shutdown(ctx))
	}
	if err := errors.Join(errs...); err != nil {
		st.log.Warn("shutdown was not clean", "error", err)
	}
}

// drain drains nc, waiting until it is closed or ctx ends.
func drain(ctx context.Context, nc *nats.Conn) error {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return fmt.Errorf("draining nats: %w", err)
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		nc.Close()
		return fmt.Errorf("draining nats: %w", ctx.Err())
	}
}

// GRPCAddr is where the stack's gRPC server listens.
func (st *Stack) GRPCAddr() string { return st.srv.GRPCAddr() }

// HTTPAddr is where the stack's HTTP server listens.
func (st *Stack) HTTPAddr() string { return st.srv.HTTPAddr() }

// NATSURL is the NATS server the stack uses (the embedded one in dev).
func (st *Stack) NATSURL() string { return st.nc.ConnectedUrl() }

// JetStream is the stack's JetStream handle, for tests that inspect streams and buckets.
func (st *Stack) JetStream() jetstream.JetStream { return st.js }

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	return host, port, nil
}
