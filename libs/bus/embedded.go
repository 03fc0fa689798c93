package bus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Defaults of EmbeddedConfig.
const (
	DefaultEmbeddedHost = "127.0.0.1"
	// DefaultEmbeddedPort is 4223, so the embedded server never collides with
	// a system NATS on 4222.
	DefaultEmbeddedPort = 4223
	// RandomPort asks for any free port, as tests do.
	RandomPort = -1
	// DefaultReadyTimeout bounds how long StartEmbedded waits for the server.
	DefaultReadyTimeout = 10 * time.Second
)

// ErrEmbeddedNotReady is returned by StartEmbedded when the server did not
// accept connections in time.
var ErrEmbeddedNotReady = errors.New("embedded nats server not ready")

// EmbeddedConfig configures StartEmbedded.
type EmbeddedConfig struct {
	// Host to bind; empty means 127.0.0.1.
	Host string
	// Port to listen on; 0 means DefaultEmbeddedPort, RandomPort (-1) a free one.
	Port int
	// StoreDir is where JetStream keeps its files. Required.
	StoreDir string
	// Logger receives the server's log; nil discards it.
	Logger *slog.Logger
	// ReadyTimeout bounds the wait for the server; 0 means DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// TLS, when set, makes the server speak TLS only (clients dial tls://).
	TLS *tls.Config
}

// Embedded is an in-process nats-server with JetStream on disk.
type Embedded struct {
	srv    *server.Server
	logger *slog.Logger
	once   sync.Once
}

// StartEmbedded starts a nats-server in this process with JetStream storing
// under cfg.StoreDir, and waits until it accepts connections (bounded by
// cfg.ReadyTimeout and ctx). The caller must call Shutdown.
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("starting embedded nats: StoreDir is required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	host := cfg.Host
	if host == "" {
		host = DefaultEmbeddedHost
	}
	port := cfg.Port
	if port == 0 {
		port = DefaultEmbeddedPort
	}
	timeout := cfg.ReadyTimeout
	if timeout <= 0 {
		timeout = DefaultReadyTimeout
	}

	opts := &server.Options{
		ServerName: "latchkey-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		// The server's own HTTP monitoring, cluster and leaf ports stay off.
	}
	if cfg.TLS != nil {
		opts.TLSConfig, opts.TLS = cfg.TLS, true
		opts.TLSTimeout = 5
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("starting embedded nats: %w", err)
	}
	sl := &serverLogger{logger: logger.With("component", "nats-server")}
	srv.SetLoggerV2(sl, false, false, false)
	srv.Start()

	if err := waitReady(ctx, srv, sl, timeout); err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("starting embedded nats on %s:%d (store %s): %w", host, port, cfg.StoreDir, err)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("starting embedded nats: %w: jetstream is not enabled: %s", ErrEmbeddedNotReady, sl.lastFatal())
	}
	e := &Embedded{srv: srv, logger: logger}
	logger.InfoContext(ctx, "embedded nats server ready", "url", e.ClientURL(), "store_dir", cfg.StoreDir)
	return e, nil
}

// waitReady polls the server until it accepts connections, reports a fatal
// error, the timeout passes, or ctx is done.
func waitReady(ctx context.Context, srv *server.Server, sl *serverLogger, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if srv.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		if fatal := sl.lastFatal(); fatal != "" {
			return fmt.Errorf("%w: %s", ErrEmbeddedNotReady, fatal)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: %w", ErrEmbeddedNotReady, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %s", ErrEmbeddedNotReady, timeout)
		}
	}
}

// ClientURL is the nats:// URL clients connect to.
func (e *Embedded) ClientURL() string {
	return e.srv.ClientURL()
}

// Shutdown stops the server and waits until it has stopped. It is safe to
// call more than once.
func (e *Embedded) Shutdown() {
	e.once.Do(func() {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
		e.logger.Info("embedded nats server stopped")
	})
}

// serverLogger adapts slog to nats-server's Logger. Notices go to debug level
// (the server is chatty at start-up); fatal errors are logged, never exit the
// process, and are kept so StartEmbedded can report them.
type serverLogger struct {
	logger *slog.Logger

	mu    sync.Mutex
	fatal string
}

func (l *serverLogger) Noticef(format string, v ...any) {
	l.logger.Debug(fmt.Sprintf(format, v...))
}

func (l *serverLogger) Warnf(format string, v ...any) {
	l.logger.Warn(fmt.Sprintf(format, v...))
}

func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.mu.Lock()
	l.fatal = msg
	l.mu.Unlock()
	l.logger.Error(msg, "fatal", true)
}

func (l *serverLogger) Errorf(format string, v ...any) {
	l.logger.Error(fmt.Sprintf(format, v...))
}

func (l *serverLogger) Debugf(format string, v ...any) {
	l.logger.Debug(fmt.Sprintf(format, v...))
}

func (l *serverLogger) Tracef(format string, v ...any) {
	l.logger.Debug(fmt.Sprintf(format, v...))
}

func (l *serverLogger) lastFatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal
}
