package bus_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/libs/bus"
)

// counter reads and writes a decimal counter at key, the way a store wraps Update.
func counter(kv jetstream.KeyValue, key string) (func(context.Context) (*int, uint64, error), func(context.Context, *int, uint64) (uint64, error)) {
	read := func(ctx context.Context) (*int, uint64, error) {
		e, err := kv.Get(ctx, key)
		if err != nil {
			return nil, 0, err
		}
		n, err := strconv.Atoi(string(e.Value()))
		return &n, e.Revision(), err
	}
	write := func(ctx context.Context, n *int, rev uint64) (uint64, error) {
		return kv.Update(ctx, key, []byte(strconv.Itoa(*n)), rev)
	}
	return read, write
}

// counterKV starts a server with a bucket holding the counter "n" at start.
func counterKV(t *testing.T, start string) (jetstream.KeyValue, uint64) {
	t.Helper()
	_, _, js := startServer(t)
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "CAS"})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Create(t.Context(), "n", []byte(start))
	if err != nil {
		t.Fatal(err)
	}
	return kv, rev
}

// Concurrent writers lose compare-and-swaps to each other; every increment still lands
// exactly once.
func TestUpdateRetriesLostSwaps(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	kv, _ := counterKV(t, "0")
	read, write := counter(kv, "n")
	const writers, each = 8, 10
	var wg sync.WaitGroup
	errc := make(chan error, writers*each)
	for range writers {
		wg.Go(func() {
			for range each {
				if _, _, err := bus.Update(ctx, 0, read, write, func(n *int) error { *n++; return nil }); err != nil {
					errc <- err
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Errorf("Update: %v", err)
	}
	n, _, err := read(ctx)
	if err != nil || *n != writers*each {
		t.Fatalf("counter = %v (%v), want %d", *n, err, writers*each)
	}
}

func TestUpdateNoChangeAndStop(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	kv, rev0 := counterKV(t, "5")
	read, write := counter(kv, "n")
	v, rev, err := bus.Update(ctx, 0, read, write, func(*int) error { return bus.ErrNoChange })
	if err != nil || *v != 5 || rev != rev0 {
		t.Fatalf("ErrNoChange: got %v rev %d err %v", *v, rev, err)
	}
	stop := errors.New("refused")
	if _, _, err := bus.Update(ctx, 0, read, write, func(*int) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("apply's error: got %v", err)
	}
	if _, _, err := bus.Update(ctx, 0, func(ctx context.Context) (*int, uint64, error) {
		_, _, err := read(ctx)
		return nil, 0, errors.Join(err, jetstream.ErrKeyNotFound)
	}, write, func(*int) error { return nil }); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("read's error: got %v", err)
	}
}

// A writer that always loses gives up after the bound, with ErrContention.
func TestUpdateIsBounded(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	kv, _ := counterKV(t, "0")
	read, write := counter(kv, "n")
	tries := 0
	_, _, err := bus.Update(ctx, 3, read, write, func(n *int) error {
		tries++
		// Another writer moves the key on between our read and our write.
		if _, err := kv.Put(ctx, "n", []byte("100")); err != nil {
			return err
		}
		*n++
		return nil
	})
	if !errors.Is(err, bus.ErrContention) || tries != 3 {
		t.Fatalf("got %v after %d tries, want ErrContention after 3", err, tries)
	}
}
