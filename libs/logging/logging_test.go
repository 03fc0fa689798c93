package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"go.opentelemetry.io/otel/propagation"
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

// TestRunIDsFollowTheWork: the Run's ids set once reach every line logged with the
// context, including on the far side of a propagator (as another service receives
// them over gRPC or NATS), without repeating a key the line already has.
func TestRunIDsFollowTheWork(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, _ := New(&buf, "json", "info")
	ctx := WithRun(t.Context(), "run-1", "sess-1", "")
	carrier := propagation.MapCarrier{}
	propagation.Baggage{}.Inject(ctx, carrier)
	remote := propagation.Baggage{}.Extract(context.Background(), carrier)
	log.InfoContext(remote, "far side", "run_id", "run-1")

	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not JSON: %q", buf.String())
	}
	if rec["run_id"] != "run-1" || rec["session_id"] != "sess-1" {
		t.Fatalf("run ids missing: %v", rec)
	}
	if _, ok := rec["project_id"]; ok {
		t.Errorf("an empty project id was logged: %v", rec)
	}
	if n := bytes.Count(buf.Bytes(), []byte(`"run_id"`)); n != 1 {
		t.Errorf("run_id appears %d times: %s", n, buf.String())
	}
}
