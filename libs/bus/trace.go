package bus

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// messagingSystemNATS is the messaging.system attribute value for NATS.
const messagingSystemNATS = "nats"

// Propagator returns the propagator Latchkey uses on NATS headers: W3C trace
// context and W3C baggage.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// HeaderCarrier adapts nats.Header to propagation.TextMapCarrier. NATS
// header keys are case-sensitive; the W3C propagators use lower-case keys on
// both sides, so they round-trip unchanged.
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string {
	return nats.Header(c).Get(key)
}

// Set replaces the values of key with value.
func (c HeaderCarrier) Set(key, value string) {
	nats.Header(c).Set(key, value)
}

// Keys lists the keys present.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the trace context of ctx into h, which must not be nil.
func Inject(ctx context.Context, prop propagation.TextMapPropagator, h nats.Header) {
	prop.Inject(ctx, HeaderCarrier(h))
}

// Extract returns ctx with the remote trace context found in h, if any.
func Extract(ctx context.Context, prop propagation.TextMapPropagator, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return prop.Extract(ctx, HeaderCarrier(h))
}

// NewMsg builds a message for subject carrying data, the trace context of
// ctx, and msgID as Nats-Msg-Id for JetStream de-duplication (omitted when
// empty).
func NewMsg(ctx context.Context, prop propagation.TextMapPropagator, subject string, data []byte, msgID string) *nats.Msg {
	msg := nats.NewMsg(subject)
	msg.Data = data
	if msgID != "" {
		msg.Header.Set(HeaderMsgID, msgID)
	}
	Inject(ctx, prop, msg.Header)
	return msg
}

// StartProducerSpan starts a producer-kind span for publishing to subject;
// build the message with NewMsg from the returned context so the consumer's
// span becomes its child.
func StartProducerSpan(ctx context.Context, tracer trace.Tracer, subject, name string) (context.Context, trace.Span) {
	return tracer.Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			semconv.MessagingSystemKey.String(messagingSystemNATS),
			semconv.MessagingDestinationName(subject),
			semconv.MessagingOperationTypeSend,
		),
	)
}

// Delivered is what a consumer span reads from a received message.
// jetstream.Msg satisfies it; wrap a core *nats.Msg with CoreMsg.
type Delivered interface {
	Subject() string
	Headers() nats.Header
}

// CoreMsg adapts a core NATS message to Delivered.
func CoreMsg(m *nats.Msg) Delivered {
	return coreMsg{m: m}
}

type coreMsg struct{ m *nats.Msg }

func (c coreMsg) Subject() string      { return c.m.Subject }
func (c coreMsg) Headers() nats.Header { return c.m.Header }

// StartConsumerSpan extracts the publisher's trace context from msg and
// starts a consumer-kind span under it, with messaging attributes. The
// consumer starts the span because nats.go handlers get no context: pass the
// consumer's long-lived context (it carries no span) as ctx, and end the
// span when the message is acked, nak'ed or terminated.
func StartConsumerSpan(ctx context.Context, tracer trace.Tracer, prop propagation.TextMapPropagator, msg Delivered, name string) (context.Context, trace.Span) {
	h := msg.Headers()
	ctx = Extract(ctx, prop, h)
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String(messagingSystemNATS),
		semconv.MessagingDestinationName(msg.Subject()),
		semconv.MessagingOperationTypeProcess,
	}
	if id := h.Get(HeaderMsgID); id != "" {
		attrs = append(attrs, semconv.MessagingMessageID(id))
	}
	return tracer.Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attrs...),
	)
}
