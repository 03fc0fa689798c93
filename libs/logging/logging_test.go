package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func TestTraceIDsStamped(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := New(&buf, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("test").Start(t.Context(), "op")
	log.With("svc", "x").InfoContext(ctx, "hello", "k", "v")
	span.End()

	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not JSON: %q", buf.String())
	}
	if rec["trace_id"] != span.SpanContext().TraceID().String() || rec["span_id"] != span.SpanContext().SpanID().String() {
		t.Fatalf("ids missing or wrong: %v", rec)
	}
	if rec["svc"] != "x" {
		t.Fatalf("WithAttrs lost: %v", rec)
	}
}

func TestNoSpanNoIDs(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, _ := New(&buf, "json", "info")
	log.InfoContext(t.Context(), "hello")
	if bytes.Contains(buf.Bytes(), []byte("trace_id")) {
		t.Fatalf("trace_id without a span: %s", buf.String())
	}
}

func TestBadOptions(t *testing.T) {
	t.Parallel()
	if _, err := New(&bytes.Buffer{}, "xml", "info"); err == nil {
		t.Error("xml format accepted")
	}
	if _, err := New(&bytes.Buffer{}, "json", "loud"); err == nil {
		t.Error("loud level accepted")
	}
}
