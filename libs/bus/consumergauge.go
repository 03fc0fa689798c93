package bus

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ConsumerRef names one durable JetStream consumer.
type ConsumerRef struct{ Stream, Consumer string }

// RegisterConsumerGauges reports, on each scrape, how far the given consumers are
// behind: latchkey.jetstream.consumer.pending (messages not yet delivered) and
// latchkey.jetstream.consumer.ack_pending (delivered, not yet acknowledged), labelled
// stream and consumer. Each scrape asks JetStream once per consumer, with a short
// timeout; a consumer it cannot read (not created yet, JetStream unreachable) is left
// out of that scrape rather than reported as 0.
func RegisterConsumerGauges(m metric.Meter, js jetstream.JetStream, refs ...ConsumerRef) error {
	pending, err := m.Int64ObservableGauge("latchkey.jetstream.consumer.pending", metric.WithUnit("{message}"),
		metric.WithDescription("Messages on a consumer's stream not yet delivered to it (the queue ahead of its workers)"))
	if err != nil {
		return err
	}
	ackPending, err := m.Int64ObservableGauge("latchkey.jetstream.consumer.ack_pending", metric.WithUnit("{message}"),
		metric.WithDescription("Messages delivered to a consumer and not yet acknowledged (in its workers' hands)"))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		for _, ref := range refs {
			c, err := js.Consumer(ctx, ref.Stream, ref.Consumer) // one consumer-info request
			if err != nil {
				continue
			}
			info := c.CachedInfo()
			attrs := metric.WithAttributes(attribute.String("stream", ref.Stream), attribute.String("consumer", ref.Consumer))
			o.ObserveInt64(pending, int64(info.NumPending), attrs)
			o.ObserveInt64(ackPending, int64(info.NumAckPending), attrs)
		}
		return nil
	}, pending, ackPending)
	return err
}
