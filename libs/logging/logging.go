// Package logging builds the structured loggers Latchkey services use: log/slog, JSON or
// text, stamped with the trace and span ids of the context each record is logged with.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"
)

// New returns a logger writing to w in format ("text" or "json") at level
// ("debug", "info", "warn", "error"), adding trace_id and span_id to every record
// logged with a context that carries a span.
func New(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("parsing log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	switch format {
	case "json":
		h = slog.NewJSONHandler(w, opts)
	case "text", "":
		h = slog.NewTextHandler(w, opts)
	default:
		return nil, fmt.Errorf("log format must be text or json, got %q", format)
	}
	return slog.New(TraceHandler{Handler: h}), nil
}

// TraceHandler wraps a handler to add the trace and span ids of the record's context.
type TraceHandler struct {
	slog.Handler
}

// Handle adds trace_id and span_id when ctx carries a valid span, and the Run's ids
// (see WithRun) that the record does not carry already.
func (h TraceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	if bag := baggage.FromContext(ctx); bag.Len() > 0 {
		for _, k := range runKeys {
			if v := bag.Member(k).Value(); v != "" && !hasAttr(r, k) {
				r.AddAttrs(slog.String(k, v))
			}
		}
	}
	return h.Handler.Handle(ctx, r)
}

// runKeys are the baggage members WithRun sets and every log line shows.
var runKeys = [...]string{"run_id", "session_id", "project_id"}

// WithRun returns ctx carrying the ids of the Run it works for (empty ones are left
// out) as W3C baggage: every record logged with ctx, or with a context derived from it
// in any service the work reaches over gRPC or NATS (the propagator carries baggage),
// shows run_id, session_id and project_id. They are ids, never secrets.
func WithRun(ctx context.Context, runID, sessionID, projectID string) context.Context {
	bag := baggage.FromContext(ctx)
	for i, v := range [...]string{runID, sessionID, projectID} {
		if v == "" || bag.Member(runKeys[i]).Value() == v {
			continue
		}
		m, err := baggage.NewMemberRaw(runKeys[i], v)
		if err != nil {
			continue
		}
		if b, err := bag.SetMember(m); err == nil {
			bag = b
		}
	}
	return baggage.ContextWithBaggage(ctx, bag)
}

func hasAttr(r slog.Record, key string) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = a.Key == key
		return !found
	})
	return found
}

// WithAttrs keeps the wrapper around the derived handler.
func (h TraceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return TraceHandler{Handler: h.Handler.WithAttrs(attrs)}
}

// WithGroup keeps the wrapper around the derived handler.
func (h TraceHandler) WithGroup(name string) slog.Handler {
	return TraceHandler{Handler: h.Handler.WithGroup(name)}
}

// Discard returns a logger that drops everything, for tests that do not read logs.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
