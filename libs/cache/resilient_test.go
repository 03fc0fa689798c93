package cache_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/latchkey/latchkey/libs/cache"
	"github.com/latchkey/latchkey/libs/testkit"
)

func TestRedisDownMidway(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testkit.Redis(t)
	logs := &recorder{}
	c, err := cache.Open(ctx, cache.Config{URL: srv.URL(), Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })

	if err := c.Set(ctx, "state:s1:1", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	mustGet(t, ctx, c, "state:s1:1", []byte("v"))
	if n, err := c.Incr(ctx, "logins:example.com", time.Minute); err != nil || n != 1 {
		t.Fatalf("Incr = %d, %v", n, err)
	}

	srv.Stop()

	start := time.Now()
	for range 5 {
		mustMiss(t, ctx, c, "state:s1:1")
		if err := c.Set(ctx, "state:s1:2", []byte("v"), time.Minute); err != nil {
			t.Fatalf("Set with redis down: %v", err)
		}
		if err := c.Delete(ctx, "state:s1:1"); err != nil {
			t.Fatalf("Delete with redis down: %v", err)
		}
	}
	// Counting goes on in-process.
	for want := int64(1); want <= 3; want++ {
		if n, err := c.Incr(ctx, "logins:example.com", time.Minute); err != nil || n != want {
			t.Fatalf("Incr with redis down = %d, %v; want %d", n, err, want)
		}
	}
	// Caller mistakes still show.
	if err := c.Set(ctx, "k", nil, 0); !errors.Is(err, cache.ErrInvalidTTL) {
		t.Errorf("Set with ttl 0 and redis down: got %v, want ErrInvalidTTL", err)
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("18 calls with redis down took %s; they should fail fast", elapsed)
	}
	if warns := logs.messages(slog.LevelWarn); len(warns) != 1 {
		t.Errorf("logged %d warnings, want 1 (rate limited): %q", len(warns), warns)
	}
}

func TestOpenWithRedisDownAtStart(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testkit.Redis(t)
	srv.Stop()
	logs := &recorder{}
	c, err := cache.Open(ctx, cache.Config{URL: srv.URL(), Logger: slog.New(logs)})
	if err != nil {
		t.Fatalf("Open with redis down: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	warns := logs.messages(slog.LevelWarn)
	if len(warns) != 1 || !strings.Contains(warns[0], "not reachable") {
		t.Errorf("warnings %q, want one about redis not reachable", warns)
	}
	mustMiss(t, ctx, c, "anything")
	if err := c.Set(ctx, "anything", []byte("v"), time.Minute); err != nil {
		t.Errorf("Set: %v", err)
	}
}

func TestOpenRejectsBadURL(t *testing.T) {
	t.Parallel()
	for _, url := range []string{
		"redis://:s3cretpw@host:notaport",
		"http://:s3cretpw@localhost:6379",
		"redis://:s3cretpw@localhost:6379/notadb",
		"redis://:s3cretpw@local\x7fhost:6379",
	} {
		_, err := cache.Open(t.Context(), cache.Config{URL: url})
		if !errors.Is(err, cache.ErrBadURL) {
			t.Errorf("Open(%q): got %v, want ErrBadURL", url, err)
			continue
		}
		if strings.Contains(err.Error(), "s3cretpw") {
			t.Errorf("Open(%q) error shows the password: %v", url, err)
		}
	}
}

func TestRedisCallsAreTracedWithoutValues(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rec := tracetest.NewSpanRecorder()
	tp := trace.NewTracerProvider(trace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(ctx) })
	c, err := cache.Open(ctx, cache.Config{URL: testkit.Redis(t).URL(), TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })

	const secret = "plaintext-must-not-leak"
	if err := c.Set(ctx, "k", []byte(secret), time.Minute); err != nil {
		t.Fatal(err)
	}
	mustGet(t, ctx, c, "k", []byte(secret))
	if _, err := c.Incr(ctx, "n", time.Minute); err != nil {
		t.Fatal(err)
	}

	names := map[string]bool{}
	for _, s := range rec.Ended() {
		names[s.Name()] = true
		for _, kv := range s.Attributes() {
			if strings.Contains(kv.Value.Emit(), secret) {
				t.Errorf("span %s attribute %s holds the cached value", s.Name(), kv.Key)
			}
		}
	}
	for _, want := range []string{"set", "get"} {
		if !names[want] {
			t.Errorf("no %q span among %v", want, names)
		}
	}
}
