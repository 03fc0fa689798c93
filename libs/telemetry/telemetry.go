// Package telemetry sets up OpenTelemetry for a Latchkey service: a tracer provider
// named after the service (exporting over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is
// set), a meter provider served as Prometheus text on /metrics, and W3C propagation.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Service names, as traces show them in Jaeger.
const (
	RegistryService  = "latchkey-session-registry"
	VaultService     = "latchkey-credential-vault"
	RunnerService    = "latchkey-browser-runner"
	SchedulerService = "latchkey-scheduler"
)

// Propagator is the W3C trace-context and baggage propagator every service uses, on
// gRPC metadata and on NATS headers alike.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// TraceConfig configures NewTracerProvider.
type TraceConfig struct {
	// ServiceName is the resource's service.name.
	ServiceName string
	// Env looks up OTEL_* variables; OTLP export is on when an endpoint is set.
	Env func(string) (string, bool)
	// Exporters are extra span exporters, such as an in-memory one in tests.
	Exporters []sdktrace.SpanExporter
}

// NewTracerProvider returns a tracer provider for one service. It always samples, so
// logs carry trace ids even when nothing exports; spans leave the process only through
// OTLP (when configured) or the given exporters. Shut it down to flush.
func NewTracerProvider(ctx context.Context, cfg TraceConfig) (*sdktrace.TracerProvider, error) {
	if cfg.ServiceName == "" {
		return nil, errors.New("telemetry: service name is empty")
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(cfg.ServiceName)))
	if err != nil {
		return nil, fmt.Errorf("building resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample()))}
	if endpoint, ok := otlpEndpoint(cfg.Env); ok {
		exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(endpoint))
		if err != nil {
			return nil, fmt.Errorf("starting OTLP trace exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	for _, exp := range cfg.Exporters {
		opts = append(opts, sdktrace.WithSyncer(exp))
	}
	return sdktrace.NewTracerProvider(opts...), nil
}

// otlpEndpoint is the OTLP/gRPC endpoint URL from the service's environment (not only
// the process's: `latchkey dev` and tests pass their own), traces-specific first. An
// http:// URL exports in plaintext, https:// over TLS, as the OpenTelemetry spec says.
func otlpEndpoint(env func(string) (string, bool)) (string, bool) {
	if env == nil {
		return "", false
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		if v, ok := env(k); ok && v != "" {
			if !strings.Contains(v, "://") {
				v = "http://" + v
			}
			return v, true
		}
	}
	return "", false
}

// Metrics is a meter provider whose instruments are served from Registry.
type Metrics struct {
	Provider *sdkmetric.MeterProvider
	// Registry holds the OpenTelemetry instruments plus Go runtime and process
	// collectors; serve it with promhttp.HandlerFor.
	Registry *prometheus.Registry
}

// NewMetrics returns a meter provider exporting to a fresh Prometheus registry.
func NewMetrics(serviceName string) (*Metrics, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("starting prometheus exporter: %w", err)
	}
	res := resource.NewSchemaless(semconv.ServiceName(serviceName))
	return &Metrics{Provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res)), Registry: reg}, nil
}

// Meter returns the named meter of mp, or a meter that records nothing when mp is nil
// (tests and tools that export no metrics).
func Meter(mp metric.MeterProvider, name string) metric.Meter {
	if mp == nil {
		return noop.NewMeterProvider().Meter(name)
	}
	return mp.Meter(name)
}
