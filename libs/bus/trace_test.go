package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/latchkey/latchkey/libs/bus"
)

func newRecorder(t testing.TB) (*tracetest.SpanRecorder, trace.Tracer) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return rec, tp.Tracer("bus_test")
}

func TestTraceContextRoundTripsThroughJetStream(t *testing.T) {
	t.Parallel()
	_, _, js := startServer(t)
	ctx := t.Context()
	if err := bus.Ensure(ctx, js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	rec, tracer := newRecorder(t)
	prop := bus.Propagator()

	subject, err := bus.TaskSubject("default")
	if err != nil {
		t.Fatal(err)
	}
	member, err := baggage.NewMember("project", "proj1")
	if err != nil {
		t.Fatal(err)
	}
	bag, err := baggage.New(member)
	if err != nil {
		t.Fatal(err)
	}
	pubCtx, pubSpan := bus.StartProducerSpan(baggage.ContextWithBaggage(ctx, bag), tracer, subject, "publish task")
	if _, err := js.PublishMsg(pubCtx, bus.NewMsg(pubCtx, prop, subject, []byte("task"), "task-1")); err != nil {
		t.Fatal(err)
	}
	pubSpan.End()

	cons, err := js.CreateOrUpdateConsumer(ctx, bus.StreamTasks, jetstream.ConsumerConfig{
		Durable: "runner", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: subject,
	})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// The consumer's context carries no span: the parent comes from headers.
	spanCtx, span := bus.StartConsumerSpan(context.WithoutCancel(ctx), tracer, prop, msg, "process task")
	if got := baggage.FromContext(spanCtx).Member("project").Value(); got != "proj1" {
		t.Errorf("baggage project = %q, want proj1", got)
	}
	if err := msg.Ack(); err != nil {
		t.Fatal(err)
	}
	span.End()

	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("recorded %d spans, want 2", len(spans))
	}
	producer, consumer := spans[0], spans[1]
	if consumer.Parent().SpanID() != producer.SpanContext().SpanID() ||
		consumer.SpanContext().TraceID() != producer.SpanContext().TraceID() {
		t.Errorf("consumer parent %v trace %v; want producer span %v trace %v",
			consumer.Parent().SpanID(), consumer.SpanContext().TraceID(),
			producer.SpanContext().SpanID(), producer.SpanContext().TraceID())
	}
	if !consumer.Parent().IsRemote() {
		t.Error("consumer parent is not marked remote")
	}
	if producer.SpanKind() != trace.SpanKindProducer || consumer.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("span kinds %v, %v; want producer, consumer", producer.SpanKind(), consumer.SpanKind())
	}
	wantAttrs := map[attribute.Key]string{
		"messaging.system":           "nats",
		"messaging.destination.name": "lk.tasks.default",
		"messaging.operation.type":   "process",
		"messaging.message.id":       "task-1",
	}
	got := map[attribute.Key]string{}
	for _, kv := range consumer.Attributes() {
		got[kv.Key] = kv.Value.Emit()
	}
	for k, v := range wantAttrs {
		if got[k] != v {
			t.Errorf("consumer attribute %s = %q, want %q", k, got[k], v)
		}
	}
}

func TestTraceContextRoundTripsThroughCoreNATS(t *testing.T) {
	t.Parallel()
	_, nc, _ := startServer(t)
	ctx := t.Context()
	rec, tracer := newRecorder(t)
	prop := bus.Propagator()

	subject, err := bus.CancelSubject("run1")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *nats.Msg, 1)
	sub, err := nc.ChanSubscribe(subject, got)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	pubCtx, pubSpan := tracer.Start(ctx, "cancel run")
	if err := nc.PublishMsg(bus.NewMsg(pubCtx, prop, subject, nil, "")); err != nil {
		t.Fatal(err)
	}
	pubSpan.End()

	var msg *nats.Msg
	select {
	case msg = <-got:
	case <-time.After(2 * time.Second):
		t.Fatal("no message received")
	}
	if msg.Header.Get(bus.HeaderMsgID) != "" {
		t.Error("empty msgID still set Nats-Msg-Id")
	}
	_, span := bus.StartConsumerSpan(context.Background(), tracer, prop, bus.CoreMsg(msg), "cancel")
	span.End()

	spans := rec.Ended()
	if len(spans) != 2 || spans[1].Parent().SpanID() != spans[0].SpanContext().SpanID() {
		t.Fatalf("consumer span is not the child of the publisher's span: %v", spans)
	}
}

func TestExtractWithoutHeaders(t *testing.T) {
	t.Parallel()
	ctx := bus.Extract(t.Context(), bus.Propagator(), nil)
	if trace.SpanContextFromContext(ctx).IsValid() {
		t.Error("Extract from nil headers produced a span context")
	}
	_, tracer := newRecorder(t)
	_, span := bus.StartConsumerSpan(t.Context(), tracer, bus.Propagator(), bus.CoreMsg(&nats.Msg{Subject: "lk.cancel.x"}), "x")
	if !span.SpanContext().IsValid() {
		t.Error("consumer span without a parent is not a valid root")
	}
	span.End()
}
