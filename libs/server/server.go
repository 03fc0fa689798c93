// Package server is the base every Latchkey service runs on: one gRPC server (auth,
// panic recovery, OpenTelemetry through otelgrpc, gRPC health, reflection) and one HTTP
// server (/healthz, /metrics, and whatever a service mounts), started and stopped
// together. In `latchkey dev` all four services register on the same Server.
package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/latchkey/latchkey/libs/errs"
)

// Options configure a Server.
type Options struct {
	// GRPCAddr and HTTPAddr are listen addresses; port 0 picks a free one.
	GRPCAddr string
	HTTPAddr string
	Logger   *slog.Logger
	// Auth checks credentials; nil refuses every call that needs them.
	Auth *Authenticator
	// MeterProvider receives otelgrpc metrics; Metrics is served on /metrics.
	MeterProvider metric.MeterProvider
	Metrics       *prometheus.Registry
	Propagator    propagation.TextMapPropagator
	// TLS, when set, serves gRPC and HTTP over TLS only (ServerTLSConfig).
	TLS *tls.Config
}

// Server is a gRPC server and an HTTP server with health and metrics.
type Server struct {
	opts     Options
	log      *slog.Logger
	grpc     *grpc.Server
	health   *health.Server
	mux      *http.ServeMux
	http     *http.Server
	dispatch *statsDispatcher

	mu       sync.Mutex
	policies map[string]Policy // by full gRPC service name
	serving  map[string]bool   // by full gRPC service name
	started  bool
	grpcLis  net.Listener
	httpLis  net.Listener
	done     chan struct{}
}

// New builds a Server and binds its listeners, so its addresses are known before
// services that dial it are created; nothing is served until Start.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil {
		return nil, errors.New("server: logger is nil")
	}
	var lc net.ListenConfig
	gl, err := lc.Listen(context.Background(), "tcp", opts.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("listening for gRPC on %s: %w", opts.GRPCAddr, err)
	}
	hl, err := lc.Listen(context.Background(), "tcp", opts.HTTPAddr)
	if err != nil {
		gl.Close()
		return nil, fmt.Errorf("listening for HTTP on %s: %w", opts.HTTPAddr, err)
	}
	if opts.Auth == nil {
		opts.Auth = NewAuthenticator("", "", nil)
	}
	var grpcOpts []grpc.ServerOption
	if opts.TLS != nil {
		// A plaintext client gets a failed handshake, never an answer.
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(opts.TLS)))
		hl = tls.NewListener(hl, opts.TLS)
	}
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		health:   health.NewServer(),
		mux:      http.NewServeMux(),
		dispatch: &statsDispatcher{},
		policies: make(map[string]Policy),
		serving:  make(map[string]bool),
		grpcLis:  gl,
		httpLis:  hl,
		done:     make(chan struct{}),
	}
	s.grpc = grpc.NewServer(append(grpcOpts,
		grpc.StatsHandler(s.dispatch),
		// errs maps the handlers' domain errors to statuses, once for every service.
		grpc.ChainUnaryInterceptor(s.recoverUnary, s.authUnary, errs.UnaryServerInterceptor(s.log)),
		grpc.ChainStreamInterceptor(s.recoverStream, s.authStream, errs.StreamServerInterceptor(s.log)),
	)...)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.mux.HandleFunc("GET /healthz", s.serveHealthz)
	reg := opts.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.http = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return s, nil
}

// Register adds a gRPC service under policy, traced with tp under its own service name.
// Its health is NOT_SERVING until SetServing.
func (s *Server) Register(desc *grpc.ServiceDesc, impl any, policy Policy, tp trace.TracerProvider) {
	s.grpc.RegisterService(desc, impl)
	opts := []otelgrpc.Option{otelgrpc.WithTracerProvider(tp)}
	if s.opts.MeterProvider != nil {
		opts = append(opts, otelgrpc.WithMeterProvider(s.opts.MeterProvider))
	}
	if s.opts.Propagator != nil {
		opts = append(opts, otelgrpc.WithPropagators(s.opts.Propagator))
	}
	s.dispatch.set(desc.ServiceName, otelgrpc.NewServerHandler(opts...))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policies[desc.ServiceName] = policy
	s.serving[desc.ServiceName] = false
	s.health.SetServingStatus(desc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	s.updateOverallLocked()
}

// Track adds a health entry for a component that has no gRPC service (the browser
// runner), so /healthz and gRPC health report it too.
func (s *Server) Track(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.serving[name] = false
	s.health.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
	s.updateOverallLocked()
}

// SetServing reports a registered service (or tracked component) healthy or not.
func (s *Server) SetServing(name string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.serving[name] = ok
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus(name, st)
	s.updateOverallLocked()
}

func (s *Server) updateOverallLocked() {
	all := len(s.serving) > 0
	for _, ok := range s.serving {
		all = all && ok
	}
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if all {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
}

// Handle mounts an HTTP handler (the recorder page, for instance).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Start serves both listeners in the background.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("server already started")
	}
	s.started = true
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := s.grpc.Serve(s.grpcLis); err != nil {
			s.log.Error("grpc server stopped", "error", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := s.http.Serve(s.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "error", err)
		}
	}()
	go func() { wg.Wait(); close(s.done) }()
	return nil
}

// GRPCAddr is the address gRPC listens on (the real port when 0 was asked for).
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// HTTPAddr is the address HTTP listens on.
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// Shutdown marks everything NOT_SERVING, lets in-flight RPCs finish until ctx ends
// (then cuts them), and stops HTTP.
func (s *Server) Shutdown(ctx context.Context) error {
	s.health.Shutdown()
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		s.grpc.Stop()
		<-stopped
	}
	err := s.http.Shutdown(ctx)
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started {
		// Serve never ran, so the listeners are still ours to close.
		s.grpcLis.Close()
		s.httpLis.Close()
	} else {
		select {
		case <-s.done:
		case <-ctx.Done():
		}
	}
	if err != nil {
		return fmt.Errorf("stopping http server: %w", err)
	}
	return nil
}

type healthReport struct {
	Status   string            `json:"status"`
	Services map[string]string `json:"services"`
}

func (s *Server) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	rep := healthReport{Status: "ok", Services: make(map[string]string, len(s.serving))}
	names := make([]string, 0, len(s.serving))
	for n := range s.serving {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		st := "SERVING"
		if !s.serving[n] {
			st, rep.Status = "NOT_SERVING", "unavailable"
		}
		rep.Services[n] = st
	}
	if len(names) == 0 {
		rep.Status = "unavailable"
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if rep.Status != "ok" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(rep)
}

func (s *Server) policyFor(fullMethod string) Policy {
	svc := serviceOf(fullMethod)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.policies[svc]
}

func serviceOf(fullMethod string) string {
	m := fullMethod
	if len(m) > 0 && m[0] == '/' {
		m = m[1:]
	}
	for i := 0; i < len(m); i++ {
		if m[i] == '/' {
			return m[:i]
		}
	}
	return m
}

func (s *Server) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	policy := s.policyFor(info.FullMethod)
	p, err := s.opts.Auth.authenticate(ctx, policy)
	if err != nil {
		return nil, err
	}
	if policy == PolicyInternal {
		if err := checkServiceCert(ctx, info.FullMethod); err != nil {
			return nil, err
		}
	}
	return handler(WithPrincipal(ctx, p), req)
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w wrappedStream) Context() context.Context { return w.ctx }

func (s *Server) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	policy := s.policyFor(info.FullMethod)
	p, err := s.opts.Auth.authenticate(ss.Context(), policy)
	if err != nil {
		return err
	}
	if policy == PolicyInternal {
		if err := checkServiceCert(ss.Context(), info.FullMethod); err != nil {
			return err
		}
	}
	return handler(srv, wrappedStream{ServerStream: ss, ctx: WithPrincipal(ss.Context(), p)})
}

func (s *Server) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.ErrorContext(ctx, "panic in rpc", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	return handler(ctx, req)
}

func (s *Server) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.ErrorContext(ss.Context(), "panic in rpc", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	return handler(srv, ss)
}
