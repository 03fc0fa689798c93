// Package cache holds Latchkey's short-lived caches (DESIGN.md section 5):
// encrypted storage states by (session, revision), the last successful
// validation per session, and per-origin login rate limits. Losing a cache
// loses nothing.
//
// Two implementations share one interface and one behaviour: Redis (for
// several replicas) and Memory (in-process, for `latchkey dev` and single
// machines). Open picks one from the configuration and wraps it in
// Resilient, which turns an unavailable cache into misses: callers treat
// every cache error as a miss, so with Redis down Runs go on, slower.
package cache

import (
	"context"
	"errors"
	"time"
)

// Errors returned by caches.
var (
	// ErrMiss is returned by Get when the key is absent or expired.
	ErrMiss = errors.New("cache miss")
	// ErrInvalidTTL is returned for a TTL or window that is not positive.
	ErrInvalidTTL = errors.New("cache ttl must be positive")
	// ErrNotCounter is returned by Incr when the key holds a value that is
	// not a counter.
	ErrNotCounter = errors.New("cache value is not a counter")
)

// Getter reads cached values.
type Getter interface {
	// Get returns the value of key, or ErrMiss when it is absent or expired.
	Get(ctx context.Context, key string) ([]byte, error)
}

// Setter writes and removes cached values.
type Setter interface {
	// Set stores value under key for ttl (rounded up to a millisecond);
	// ttl must be positive (ErrInvalidTTL). The value is copied.
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Delete removes keys; absent keys are not an error.
	Delete(ctx context.Context, keys ...string) error
}

// Counter counts events in fixed windows, for rate limits.
type Counter interface {
	// Incr adds one to the counter key and returns the new count. The first
	// increment starts a window that ends window later (ErrInvalidTTL if it
	// is not positive); the counter then vanishes and the next Incr returns
	// 1. The increment and the expiry are set atomically. A key holding a
	// value that is not a counter gives ErrNotCounter.
	Incr(ctx context.Context, key string, window time.Duration) (int64, error)
}

// Cache is the whole cache interface. Take the narrowest of Getter, Setter
// and Counter that a consumer needs.
type Cache interface {
	Getter
	Setter
	Counter
}

// checkTTL validates a TTL and rounds it up to the millisecond, the finest
// Redis keeps.
func checkTTL(ttl time.Duration) (time.Duration, error) {
	if ttl <= 0 {
		return 0, ErrInvalidTTL
	}
	return (ttl + time.Millisecond - 1).Truncate(time.Millisecond), nil
}
