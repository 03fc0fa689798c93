package cache

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"
)

// Tuning of the Redis client Open makes, where the URL does not set it:
// a cache that does not answer quickly is worse than no cache.
const (
	DefaultPrefix         = "lk:"
	redisDialTimeout      = time.Second
	redisIOTimeout        = 500 * time.Millisecond
	redisMaxRetries       = 1
	redisMaxRetryBackoff  = 64 * time.Millisecond
	redisDialerRetries    = 1
	redisStartPingTimeout = 2 * time.Second
)

// ErrBadURL is returned by Open for a Redis URL it cannot use.
var ErrBadURL = errors.New("bad redis url")

// Config selects and tunes the cache Open returns.
type Config struct {
	// URL is LATCHKEY_REDIS_URL, e.g. redis://:password@host:6379/0. Empty
	// means an in-process cache.
	URL string
	// Prefix of every Redis key; empty means DefaultPrefix.
	Prefix string
	// Memory bounds the in-process cache.
	Memory MemoryOptions
	// Logger receives start-up and failure warnings; nil discards them.
	Logger *slog.Logger
	// TracerProvider traces Redis calls; nil means they are not traced.
	TracerProvider trace.TracerProvider
	// RootCAs verify Redis's certificate for a rediss:// URL; nil: the system's.
	RootCAs *x509.CertPool
}

// Open returns the configured cache wrapped in Resilient: Memory when
// cfg.URL is empty, else Redis. If Redis does not answer at start Open logs
// a warning and still returns the Redis cache: its calls fail fast and
// Resilient answers them as misses until Redis is back. Only a malformed URL
// is an error. Close the result on shutdown.
func Open(ctx context.Context, cfg Config) (*Resilient, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.URL == "" {
		logger.InfoContext(ctx, "using in-process cache")
		return NewResilient(NewMemory(cfg.Memory), logger), nil
	}

	opt, err := parseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if opt.TLSConfig != nil {
		opt.TLSConfig.MinVersion = tls.VersionTLS12
		opt.TLSConfig.RootCAs = cfg.RootCAs
	}
	client := redis.NewClient(opt)
	if cfg.TracerProvider != nil {
		if err := Instrument(client, cfg.TracerProvider); err != nil {
			_ = client.Close()
			return nil, err
		}
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}

	pingCtx, cancel := context.WithTimeout(ctx, redisStartPingTimeout)
	defer cancel()
	if err := client.Ping(pingCtx).Err(); err != nil {
		logger.WarnContext(ctx, "redis not reachable at start; cache calls will miss until it is",
			"redis_addr", opt.Addr, "error", err)
	} else {
		logger.InfoContext(ctx, "using redis cache", "redis_addr", opt.Addr)
	}
	r := NewResilient(NewRedis(client, prefix), logger)
	r.closer = client.Close
	return r, nil
}

// parseURL parses a Redis URL and fills in short timeouts. Its errors never
// quote the URL, which may hold a password.
func parseURL(raw string) (*redis.Options, error) {
	if _, err := url.Parse(raw); err != nil {
		return nil, fmt.Errorf("%w: malformed URL (not shown, it may hold a password); "+
			"expected redis://[:password@]host:port[/db]", ErrBadURL)
	}
	opt, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = redisDialTimeout
	}
	if opt.ReadTimeout == 0 {
		opt.ReadTimeout = redisIOTimeout
	}
	if opt.WriteTimeout == 0 {
		opt.WriteTimeout = redisIOTimeout
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = redisMaxRetries
	}
	if opt.DialerRetries == 0 {
		opt.DialerRetries = redisDialerRetries
	}
	if opt.MaxRetryBackoff == 0 {
		opt.MaxRetryBackoff = redisMaxRetryBackoff
	}
	return opt, nil
}
