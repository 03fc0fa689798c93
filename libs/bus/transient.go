package bus

import (
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/libs/errs"
)

// Every service talks to NATS through this package: from then on a gRPC answer to
// a passing NATS failure is Unavailable, which callers retry.
func init() { errs.SetTransient(Transient) }

// Transient reports a NATS or JetStream failure that passes by itself: JetStream
// answering 503 ("JetStream system temporarily unavailable": no meta leader yet, or
// a stream's leader being elected after a node was lost), no responders, a request
// that timed out, no answer from a stream, a connection reconnecting.
func Transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503
	}
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrConnectionReconnecting)
}
