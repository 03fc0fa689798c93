package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Scan calls fn with the newest entry of every key of kv matching filter, deletes
// left out, through one KV watch: the values stream from one consumer instead of a
// key listing and a read per key. metaOnly leaves the values out. It returns when
// every current entry was delivered, or with fn's first error.
func Scan(ctx context.Context, kv jetstream.KeyValue, filter string, metaOnly bool, fn func(jetstream.KeyValueEntry) error) error {
	opts := []jetstream.WatchOpt{jetstream.IgnoreDeletes()}
	if metaOnly {
		opts = append(opts, jetstream.MetaOnly())
	}
	w, err := kv.WatchFiltered(ctx, []string{filter}, opts...)
	if err != nil {
		return fmt.Errorf("listing %s %s: %w", kv.Bucket(), filter, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return fmt.Errorf("listing %s %s: the watcher stopped early", kv.Bucket(), filter)
			case e == nil:
				return nil // every current entry was delivered
			}
			if err := fn(e); err != nil {
				return err
			}
		case <-ctx.Done():
			return fmt.Errorf("listing %s %s: %w", kv.Bucket(), filter, ctx.Err())
		}
	}
}

// IsConflict reports whether a KV write lost a compare-and-swap: the key exists (a
// Create), or its revision moved on (an Update with a stale revision).
func IsConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence)
}
