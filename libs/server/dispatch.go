package server

import (
	"context"
	"strings"
	"sync"

	"google.golang.org/grpc/stats"
)

// statsDispatcher hands each RPC to the stats handler of the service that owns its
// method, so that when several services share one gRPC server (`latchkey dev`) each
// still traces under its own service name. RPCs of services without a handler (health,
// reflection) are not traced.
type statsDispatcher struct {
	mu       sync.RWMutex
	handlers map[string]stats.Handler // by full service name
}

type dispatchKey struct{}

func (d *statsDispatcher) set(service string, h stats.Handler) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.handlers == nil {
		d.handlers = make(map[string]stats.Handler)
	}
	d.handlers[service] = h
}

func (d *statsDispatcher) lookup(fullMethod string) stats.Handler {
	service, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.handlers[service]
}

// TagRPC picks the handler for the method and lets it tag the context.
func (d *statsDispatcher) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	h := d.lookup(info.FullMethodName)
	if h == nil {
		return ctx
	}
	return h.TagRPC(context.WithValue(ctx, dispatchKey{}, h), info)
}

// HandleRPC forwards to the handler TagRPC picked.
func (d *statsDispatcher) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if h, ok := ctx.Value(dispatchKey{}).(stats.Handler); ok {
		h.HandleRPC(ctx, s)
	}
}

// TagConn is a no-op: connections are shared by services.
func (d *statsDispatcher) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

// HandleConn is a no-op.
func (d *statsDispatcher) HandleConn(context.Context, stats.ConnStats) {}
