package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// ErrNoChange, returned by an Update's apply function, leaves the value as it is:
// Update returns it with a nil error and writes nothing.
var ErrNoChange = errors.New("no change")

// ErrContention is returned by Update when every attempt lost its compare-and-swap.
var ErrContention = errors.New("too much contention")

// DefaultUpdateAttempts bounds Update's read-modify-write loop.
const DefaultUpdateAttempts = 64

// Update is the one compare-and-swap loop of every KV store: it reads a value and its
// revision, applies apply to it, and writes it back on that revision; when another
// writer won (IsConflict) it reads again and re-applies apply, at most attempts times
// (DefaultUpdateAttempts when attempts <= 0), then fails with ErrContention. read and
// write carry the store's own key, encoding and not-found error; write returns the
// new revision. apply may return ErrNoChange to write nothing, or any other error to
// stop: that error is returned as it is.
func Update[T any](ctx context.Context, attempts int,
	read func(context.Context) (T, uint64, error),
	write func(ctx context.Context, v T, rev uint64) (uint64, error),
	apply func(T) error,
) (T, uint64, error) {
	var zero T
	if attempts <= 0 {
		attempts = DefaultUpdateAttempts
	}
	for range attempts {
		v, rev, err := read(ctx)
		if err != nil {
			return zero, 0, err
		}
		if err := apply(v); errors.Is(err, ErrNoChange) {
			return v, rev, nil
		} else if err != nil {
			return zero, 0, err
		}
		next, err := write(ctx, v, rev)
		if err == nil {
			return v, next, nil
		}
		if !IsConflict(err) {
			return zero, 0, err
		}
		if err := ctx.Err(); err != nil {
			return zero, 0, err
		}
	}
	return zero, 0, fmt.Errorf("%w: %d compare-and-swap attempts lost", ErrContention, attempts)
}

// UpdateProto is Update for a protobuf record stored at key of kv: it reads and
// decodes the record (notFound, wrapped, when the key does not exist), applies apply,
// and writes it back encoded on the revision it read. Every store of records in a KV
// bucket updates through it.
func UpdateProto[T any, P interface {
	*T
	proto.Message
}](ctx context.Context, kv jetstream.KeyValue, key string, notFound error, apply func(P) error) (P, uint64, error) {
	read := func(ctx context.Context) (P, uint64, error) {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, 0, notFound
		}
		if err != nil {
			return nil, 0, fmt.Errorf("reading %s: %w", key, err)
		}
		rec := P(new(T))
		if err := proto.Unmarshal(e.Value(), rec); err != nil {
			return nil, 0, fmt.Errorf("decoding %s: %w", key, err)
		}
		return rec, e.Revision(), nil
	}
	write := func(ctx context.Context, rec P, rev uint64) (uint64, error) {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
		if err != nil {
			return 0, fmt.Errorf("encoding %s: %w", key, err)
		}
		return kv.Update(ctx, key, b, rev)
	}
	return Update(ctx, 0, read, write, apply)
}
