package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Connection tuning used by Connect.
const (
	connectAttemptTimeout = 2 * time.Second
	reconnectWait         = 500 * time.Millisecond
	reconnectJitter       = 250 * time.Millisecond
	connectRetryMin       = 100 * time.Millisecond
	connectRetryMax       = 2 * time.Second
	// reconnectBufSize is how much a client buffers while reconnecting
	// before publishes fail.
	reconnectBufSize = 16 << 20
)

// Connect connects to NATS at url as client name and opens JetStream on it.
// Once connected the client reconnects forever, logging every disconnect and
// reconnect. Until the first connection succeeds Connect retries with
// back-off while ctx allows, so a service may start before its NATS server;
// give ctx a deadline to bound the wait. The caller drains the returned
// connection on shutdown.
func Connect(ctx context.Context, url, name string, logger *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("nats_url", url, "nats_client", name)
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(connectAttemptTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectJitter(reconnectJitter, reconnectJitter),
		nats.ReconnectBufSize(reconnectBufSize),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				// A drain or close we asked for: nothing went wrong.
				logger.Debug("nats disconnected")
				return
			}
			logger.Warn("nats disconnected", "error", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			logger.Debug("nats connection closed")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			logger.Error("nats async error", "subject", subject, "error", err)
		}),
	}

	wait := connectRetryMin
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect(url, opts...)
		if err == nil {
			js, err := jetstream.New(nc)
			if err != nil {
				nc.Close()
				return nil, nil, fmt.Errorf("opening jetstream on %s: %w", url, err)
			}
			logger.DebugContext(ctx, "nats connected", "server", nc.ConnectedUrlRedacted())
			return nc, js, nil
		}
		if !retryable(err) {
			return nil, nil, fmt.Errorf("connecting to nats at %s: %w", url, err)
		}
		logger.WarnContext(ctx, "nats not reachable yet, retrying", "attempt", attempt, "retry_in", wait, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, fmt.Errorf("connecting to nats at %s: %w (last error: %w)", url, ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, connectRetryMax)
	}
}

// retryable tells whether a failed first connect is worth trying again: a
// server that is not up yet (refused or timed out connections surface as
// these two errors) is; a bad URL or bad credentials are not.
func retryable(err error) bool {
	return errors.Is(err, nats.ErrNoServers) || errors.Is(err, nats.ErrTimeout)
}
