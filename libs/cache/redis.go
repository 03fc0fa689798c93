package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"
)

// incrScript increments a counter and, when it has no expiry yet (it was
// just created), starts its window; both in one atomic step.
const incrScript = `
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n`

// Redis is a Cache in Redis. Every key is stored under a prefix, so several
// deployments or purposes can share one Redis.
type Redis struct {
	client redis.UniversalClient
	prefix string
	incr   *redis.Script
}

var _ Cache = (*Redis)(nil)

// NewRedis returns a cache storing keys as prefix+key in client. It does
// not own the client: the caller closes it. Trace Redis calls by
// instrumenting the client with Instrument (Open does).
func NewRedis(client redis.UniversalClient, prefix string) *Redis {
	return &Redis{client: client, prefix: prefix, incr: redis.NewScript(incrScript)}
}

// Instrument adds a tracing hook to client that starts a span per command,
// named after it (GET, SET, EVALSHA ...). Commands' arguments, and so cached
// values, are never put in spans.
func Instrument(client redis.UniversalClient, tp trace.TracerProvider) error {
	err := redisotel.InstrumentTracing(client,
		redisotel.WithTracerProvider(tp),
		redisotel.WithDBStatement(false),
		redisotel.WithCallerEnabled(false),
	)
	if err != nil {
		return fmt.Errorf("instrumenting redis client: %w", err)
	}
	return nil
}

// Get returns the value of key, or ErrMiss.
func (r *Redis) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := r.client.Get(ctx, r.prefix+key).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, ErrMiss
	case err != nil:
		return nil, fmt.Errorf("getting %q from redis: %w", key, err)
	}
	return v, nil
}

// Set stores value under key for ttl.
func (r *Redis) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	ttl, err := checkTTL(ttl)
	if err != nil {
		return fmt.Errorf("setting %q: %w", key, err)
	}
	if err := r.client.Set(ctx, r.prefix+key, value, ttl).Err(); err != nil {
		return fmt.Errorf("setting %q in redis: %w", key, err)
	}
	return nil
}

// Delete removes keys.
func (r *Redis) Delete(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = r.prefix + k
	}
	if err := r.client.Del(ctx, full...).Err(); err != nil {
		return fmt.Errorf("deleting %d keys from redis: %w", len(keys), err)
	}
	return nil
}

// Incr adds one to the counter key in its fixed window.
func (r *Redis) Incr(ctx context.Context, key string, window time.Duration) (int64, error) {
	window, err := checkTTL(window)
	if err != nil {
		return 0, fmt.Errorf("incrementing %q: %w", key, err)
	}
	n, err := r.incr.Run(ctx, r.client, []string{r.prefix + key}, window.Milliseconds()).Int64()
	if err != nil {
		if strings.Contains(err.Error(), "not an integer") {
			err = ErrNotCounter
		}
		return 0, fmt.Errorf("incrementing %q in redis: %w", key, err)
	}
	return n, nil
}

// RedisLogger routes go-redis's own log lines (one per failed dial while
// Redis is down, for instance) to slog at debug level; Resilient already
// warns, rate-limited, about an unavailable cache. go-redis keeps its
// logger in a package variable, so main installs this once:
//
//	redis.SetLogger(cache.RedisLogger{Logger: logger})
type RedisLogger struct {
	Logger *slog.Logger
}

// Printf logs one go-redis message.
func (l RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	if l.Logger != nil {
		l.Logger.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
	}
}
