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

// Connect connects to NATS at opts.URL with opts' credentials and TLS, checks
// that the server is new enough (MinServerVersion) and has JetStream for this
// account, and opens JetStream on it. Once connected the client reconnects
// forever, logging every disconnect and reconnect. Until the first connection
// succeeds and JetStream answers, Connect retries with back-off while ctx
// allows, so a service may start before its NATS server; give ctx a deadline to
// bound the wait. Refused credentials, a bad certificate, a server too old
// (ErrServerTooOld) or without JetStream (ErrNoJetStream) fail at once. The
// caller drains the returned connection on shutdown.
func Connect(ctx context.Context, opts ConnectOptions) (*nats.Conn, jetstream.JetStream, error) {
	if err := opts.validate(); err != nil {
		return nil, nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	where := RedactURL(opts.URL)
	logger = logger.With("nats_url", where, "nats_client", opts.Name)
	natsOpts, err := opts.authOptions()
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to nats at %s: %w", where, err)
	}
	natsOpts = append(natsOpts, connOptions(opts.Name, logger)...)

	wait := connectRetryMin
	for attempt := 1; ; attempt++ {
		nc, js, err := connectOnce(ctx, opts.URL, natsOpts, logger)
		if err == nil {
			return nc, js, nil
		}
		if !retryable(err) {
			if isAuthError(err) {
				return nil, nil, fmt.Errorf("connecting to nats at %s: the server refused %s: %w", where, opts.authDescription(), err)
			}
			return nil, nil, fmt.Errorf("connecting to nats at %s: %w", where, err)
		}
		logger.WarnContext(ctx, "nats not reachable yet, retrying", "attempt", attempt, "retry_in", wait, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, fmt.Errorf("connecting to nats at %s: %w (last error: %w)", where, ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, connectRetryMax)
	}
}

// connectOnce makes one attempt: connect, check the server, open JetStream.
func connectOnce(ctx context.Context, url string, opts []nats.Option, logger *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("opening jetstream: %w", err)
	}
	if err := checkServer(ctx, nc, js, logger); err != nil {
		nc.Close()
		return nil, nil, err
	}
	logger.DebugContext(ctx, "nats connected", "server", RedactURL(nc.ConnectedUrl()),
		"server_version", nc.ConnectedServerVersion(), "cluster", nc.ConnectedClusterName())
	return nc, js, nil
}

// connOptions are the options of every connection: its name, reconnecting
// forever, and logging what happens to it.
func connOptions(name string, logger *slog.Logger) []nats.Option {
	return []nats.Option{
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
			logger.Info("nats reconnected", "server", RedactURL(nc.ConnectedUrl()))
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
}

// isAuthError tells whether the server refused the client's credentials.
func isAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired)
}

// retryable tells whether a failed first connect is worth trying again: a
// server that is not up yet (refused or timed out connections surface as
// these two errors), or whose JetStream does not answer yet (errJetStreamBusy),
// is; a bad URL, bad credentials or a server that is too old are not.
func retryable(err error) bool {
	return errors.Is(err, nats.ErrNoServers) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, errJetStreamBusy)
}
