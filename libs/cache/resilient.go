package cache

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// DefaultWarnEvery is how often Resilient logs that its cache is failing.
const DefaultWarnEvery = 30 * time.Second

// Resilient wraps a Cache so that an unavailable cache never fails a
// caller: Get answers ErrMiss, Set and Delete do nothing, and Incr counts in
// a local in-process cache instead (per-process limits are looser than
// shared ones, but never absent). Failures are logged as warnings, at most
// once per DefaultWarnEvery. Caller mistakes (ErrInvalidTTL, ErrNotCounter)
// are returned as they are.
type Resilient struct {
	inner    Cache
	fallback *Memory
	logger   *slog.Logger
	now      func() time.Time
	closer   func() error

	mu         sync.Mutex
	lastWarn   time.Time
	suppressed int
}

var _ Cache = (*Resilient)(nil)

// NewResilient wraps inner. A nil logger discards the warnings.
func NewResilient(inner Cache, logger *slog.Logger) *Resilient {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Resilient{
		inner:    inner,
		fallback: NewMemory(MemoryOptions{}),
		logger:   logger,
		now:      time.Now,
		closer:   func() error { return nil },
	}
}

// Get returns the value of key, or ErrMiss when it is absent, expired or
// the cache cannot be reached.
func (r *Resilient) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := r.inner.Get(ctx, key)
	if err == nil || errors.Is(err, ErrMiss) {
		return v, err
	}
	r.warn(ctx, "get", err)
	return nil, ErrMiss
}

// Set stores value under key for ttl, or does nothing when the cache cannot
// be reached.
func (r *Resilient) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := r.inner.Set(ctx, key, value, ttl); err != nil {
		if callerMistake(err) {
			return err
		}
		r.warn(ctx, "set", err)
	}
	return nil
}

// Delete removes keys, or does nothing when the cache cannot be reached.
// The entries then live until their TTL: cache only what may be stale
// for that long.
func (r *Resilient) Delete(ctx context.Context, keys ...string) error {
	if err := r.inner.Delete(ctx, keys...); err != nil {
		r.warn(ctx, "delete", err)
	}
	return nil
}

// Incr counts in the wrapped cache, or in a local in-process counter when
// it cannot be reached.
func (r *Resilient) Incr(ctx context.Context, key string, window time.Duration) (int64, error) {
	n, err := r.inner.Incr(ctx, key, window)
	if err == nil || callerMistake(err) {
		return n, err
	}
	r.warn(ctx, "incr", err)
	return r.fallback.Incr(ctx, key, window)
}

// Close releases what Open created for this cache (the Redis client). A
// Resilient from NewResilient owns nothing and Close does nothing.
func (r *Resilient) Close() error {
	return r.closer()
}

func callerMistake(err error) bool {
	return errors.Is(err, ErrInvalidTTL) || errors.Is(err, ErrNotCounter)
}

// warn logs a cache failure, at most once per DefaultWarnEvery, counting the
// ones it held back. A cancelled caller is not the cache's failure and is
// not logged.
func (r *Resilient) warn(ctx context.Context, op string, err error) {
	if ctx.Err() != nil {
		return
	}
	r.mu.Lock()
	now := r.now()
	if !r.lastWarn.IsZero() && now.Sub(r.lastWarn) < DefaultWarnEvery {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	suppressed := r.suppressed
	r.lastWarn, r.suppressed = now, 0
	r.mu.Unlock()
	r.logger.WarnContext(ctx, "cache unavailable, answering as a miss",
		"op", op, "error", err, "suppressed_since_last", suppressed)
}
