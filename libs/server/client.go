package server

import (
	"context"
	"crypto/tls"
	"fmt"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/latchkey/latchkey/libs/errs"
)

// DialOptions configure a client connection from one service to another.
type DialOptions struct {
	// Token is sent as "authorization: Bearer <token>": the internal token between
	// services, or an API key for the CLI.
	Token string
	// Service names the calling service (sent in x-latchkey-service).
	Service string
	// TracerProvider traces the client side of each call; nil: not traced.
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// TLS, when set, dials with TLS (and the client certificate in it: mTLS).
	TLS *tls.Config
}

// Dial returns a client connection to target. It does not block: the connection is
// made on first use.
func Dial(target string, o DialOptions) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if o.TLS != nil {
		creds = credentials.NewTLS(o.TLS)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// A refusal comes back as an errs.Error of its kind, so callers test it with
		// errors.Is and never decode a status (it still reads as one: status.Code).
		grpc.WithUnaryInterceptor(errs.UnaryClientInterceptor()),
	}
	if o.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tokenCreds{token: o.Token, service: o.Service}))
	}
	if o.TracerProvider != nil {
		h := []otelgrpc.Option{otelgrpc.WithTracerProvider(o.TracerProvider)}
		if o.Propagator != nil {
			h = append(h, otelgrpc.WithPropagators(o.Propagator))
		}
		opts = append(opts, grpc.WithStatsHandler(otelgrpc.NewClientHandler(h...)))
	}
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", target, err)
	}
	return cc, nil
}

// ForProject returns ctx carrying ProjectHeader, for a service calling a public API on
// behalf of a project with the internal token.
func ForProject(ctx context.Context, projectID string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, ProjectHeader, projectID)
}

type tokenCreds struct{ token, service string }

func (c tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	md := map[string]string{"authorization": "Bearer " + c.token}
	if c.service != "" {
		md[ServiceHeader] = c.service
	}
	return md, nil
}

// RequireTransportSecurity is false: in development services talk over loopback in
// plaintext; production deployments set TLS (see docs/security.md).
func (tokenCreds) RequireTransportSecurity() bool { return false }
