package cache_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/libs/cache"
	"github.com/latchkey/latchkey/libs/testkit"
)

func TestMain(m *testing.M) {
	// go-redis logs every failed dial through a package-level logger; the
	// Redis-down tests would flood the output.
	redis.SetLogger(cache.RedisLogger{Logger: slog.New(slog.DiscardHandler)})
	// After a failed dial go-redis starts a background tryDial that sleeps a second
	// between attempts and stops only once the pool is closed and it wakes up; it is
	// go-redis's own goroutine, not one of ours, so it may outlive the test by a second.
	goleak.VerifyTestMain(m, testkit.LibraryGoroutines()...)
}

// implementations lists every Cache, each made fresh for one test.
func implementations() []struct {
	name string
	new  func(t testing.TB) cache.Cache
} {
	return []struct {
		name string
		new  func(t testing.TB) cache.Cache
	}{
		{"memory", func(testing.TB) cache.Cache { return cache.NewMemory(cache.MemoryOptions{}) }},
		{"redis", func(t testing.TB) cache.Cache {
			srv := testkit.Redis(t)
			client := redis.NewClient(&redis.Options{Addr: srv.Addr})
			t.Cleanup(func() { _ = client.Close() })
			return cache.NewRedis(client, "test:")
		}},
		{"open-memory", func(t testing.TB) cache.Cache { return open(t, "") }},
		{"open-redis", func(t testing.TB) cache.Cache { return open(t, testkit.Redis(t).URL()) }},
	}
}

func open(t testing.TB, url string) *cache.Resilient {
	t.Helper()
	c, err := cache.Open(t.Context(), cache.Config{URL: url})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// forEach runs test against every implementation, in parallel.
func forEach(t *testing.T, test func(t *testing.T, ctx context.Context, c cache.Cache)) {
	t.Parallel()
	for _, impl := range implementations() {
		t.Run(impl.name, func(t *testing.T) {
			t.Parallel()
			test(t, t.Context(), impl.new(t))
		})
	}
}

func mustGet(t *testing.T, ctx context.Context, c cache.Cache, key string, want []byte) {
	t.Helper()
	got, err := c.Get(ctx, key)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Get(%q) = %q, %v; want %q", key, got, err, want)
	}
}

func mustMiss(t *testing.T, ctx context.Context, c cache.Cache, key string) {
	t.Helper()
	if got, err := c.Get(ctx, key); !errors.Is(err, cache.ErrMiss) {
		t.Fatalf("Get(%q) = %q, %v; want ErrMiss", key, got, err)
	}
}

func TestSetGetMiss(t *testing.T) {
	forEach(t, func(t *testing.T, ctx context.Context, c cache.Cache) {
		mustMiss(t, ctx, c, "state:s1:3")
		value := []byte("ciphertext")
		if err := c.Set(ctx, "state:s1:3", value, time.Minute); err != nil {
			t.Fatal(err)
		}
		value[0] = 'X' // the cache kept its own copy
		mustGet(t, ctx, c, "state:s1:3", []byte("ciphertext"))
		got, _ := c.Get(ctx, "state:s1:3")
		got[0] = 'Y' // and hands out copies
		mustGet(t, ctx, c, "state:s1:3", []byte("ciphertext"))

		if err := c.Set(ctx, "state:s1:3", []byte("v2"), time.Minute); err != nil {
			t.Fatal(err)
		}
		mustGet(t, ctx, c, "state:s1:3", []byte("v2"))
		if err := c.Set(ctx, "empty", nil, time.Minute); err != nil {
			t.Fatal(err)
		}
		mustGet(t, ctx, c, "empty", nil)
	})
}

func TestDelete(t *testing.T) {
	forEach(t, func(t *testing.T, ctx context.Context, c cache.Cache) {
		for _, k := range []string{"a", "b", "c"} {
			if err := c.Set(ctx, k, []byte(k), time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Delete(ctx, "a", "b", "never-set"); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx); err != nil {
			t.Fatalf("Delete of no keys: %v", err)
		}
		mustMiss(t, ctx, c, "a")
		mustMiss(t, ctx, c, "b")
		mustGet(t, ctx, c, "c", []byte("c"))
	})
}

func TestTTLExpiry(t *testing.T) {
	forEach(t, func(t *testing.T, ctx context.Context, c cache.Cache) {
		if err := c.Set(ctx, "short", []byte("v"), 200*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if err := c.Set(ctx, "long", []byte("v"), time.Minute); err != nil {
			t.Fatal(err)
		}
		mustGet(t, ctx, c, "short", []byte("v"))
		// Waiting out the TTL is what this test is about: the key must be gone once its
		// TTL has passed, with nothing else having happened.
		time.Sleep(400 * time.Millisecond)
		mustMiss(t, ctx, c, "short")
		mustGet(t, ctx, c, "long", []byte("v"))
	})
}

func TestInvalidTTL(t *testing.T) {
	forEach(t, func(t *testing.T, ctx context.Context, c cache.Cache) {
		for _, ttl := range []time.Duration{0, -time.Second} {
			if err := c.Set(ctx, "k", []byte("v"), ttl); !errors.Is(err, cache.ErrInvalidTTL) {
				t.Errorf("Set with ttl %v: got %v, want ErrInvalidTTL", ttl, err)
			}
			if _, err := c.Incr(ctx, "n", ttl); !errors.Is(err, cache.ErrInvalidTTL) {
				t.Errorf("Incr with window %v: got %v, want ErrInvalidTTL", ttl, err)
			}
		}
		mustMiss(t, ctx, c, "k")
	})
}

func TestIncrWindow(t *testing.T) {
	forEach(t, func(t *testing.T, ctx context.Context, c cache.Cache) {
		const window = 300 * time.Millisecond
		for want := int64(1); want <= 3; want++ {
			got, err := c.Incr(ctx, "logins:example.com", window)
			if err != nil || got != want {
				t.Fatalf("Incr = %d, %v; want %d", got, err, want)
			}
		}
		// The window started at the first increment; later ones don't extend it.
		mustGet(t, ctx, c, "logins:example.com", []byte("3"))
		// Waiting out the window is the subject here: after it, counting starts over.
		time.Sleep(window + 200*time.Millisecond)
		if got, err := c.Incr(ctx, "logins:example.com", window); err != nil || got != 1 {
			t.Fatalf("Incr in a new window = %d, %v; want 1", got, err)
		}

		if err := c.Set(ctx, "not-a-counter", []byte("hello"), time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Incr(ctx, "not-a-counter", window); !errors.Is(err, cache.ErrNotCounter) {
			t.Fatalf("Incr on a string: got %v, want ErrNotCounter", err)
		}
	})
}

func TestIncrIsAtomic(t *testing.T) {
	forEach(t, func(t *testing.T, ctx context.Context, c cache.Cache) {
		const n = 40
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			seen []int64
		)
		for range n {
			wg.Go(func() {
				v, err := c.Incr(ctx, "burst", time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen = append(seen, v)
				mu.Unlock()
			})
		}
		wg.Wait()
		slices.Sort(seen)
		for i, v := range seen {
			if v != int64(i+1) {
				t.Fatalf("counts %v, want 1..%d each once", seen, n)
			}
		}
	})
}

// recorder is a slog handler that keeps the records it gets.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
	return nil
}

func (r *recorder) messages(level slog.Level) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.records {
		if rec.Level == level {
			out = append(out, rec.Message)
		}
	}
	return out
}
