package bus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Needs lists the streams and KV buckets a service cannot work without.
type Needs struct {
	Streams []string
	Buckets []string
}

// CheckReady reports whether every stream and bucket in n exists and answers, naming
// the first that does not. Services call it before reporting themselves healthy.
func CheckReady(ctx context.Context, js jetstream.JetStream, n Needs) error {
	for _, name := range n.Streams {
		if _, err := js.Stream(ctx, name); err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
	}
	for _, name := range n.Buckets {
		if _, err := js.KeyValue(ctx, name); err != nil {
			return fmt.Errorf("kv bucket %s: %w", name, err)
		}
	}
	return nil
}
