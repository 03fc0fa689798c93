package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/latchkey/latchkey/libs/config"
	"github.com/latchkey/latchkey/libs/logging"
)

// runDev runs every service in one process until ctx ends (Ctrl-C). It keeps its
// generated secrets in the data directory so restarts keep working.
func runDev(ctx context.Context, cfg *config.Config, env config.Env, stdout, stderr io.Writer) error {
	began := time.Now()
	log, err := logging.New(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	if err := ensureDir(cfg.DataDir); err != nil {
		return err
	}
	if cfg.InternalToken == "" {
		tok, _, err := devSecret(cfg.DataDir, internalTokenFile, "")
		if err != nil {
			return err
		}
		cfg.InternalToken = tok
	}
	if cfg.AdminKey == "" {
		key, created, err := devSecret(cfg.DataDir, adminKeyFile, "lk_admin_")
		if err != nil {
			return err
		}
		if created {
			log.Info("generated the admin key", "file", filepath.Join(cfg.DataDir, adminKeyFile))
		}
		cfg.AdminKey = key
	}
	log.Debug("configuration", "config", *cfg)
	st, err := startStack(ctx, cfg, serviceNames, env, log)
	if err != nil {
		return err
	}
	natsURL := "nats://" + cfg.EmbeddedNATSAddr
	if cfg.NATSURL != "" {
		natsURL = cfg.NATSURL
	}
	fmt.Fprintf(stdout, `latchkey dev is up (%s)
  gRPC     %s   every public API, plus health and reflection
  HTTP     http://%s   /healthz  /metrics
  NATS     %s   JetStream
  data     %s
  admin    key in %s
Ctrl-C stops it.
`, time.Since(began).Round(time.Millisecond), st.srv.GRPCAddr(), st.srv.HTTPAddr(), natsURL,
		cfg.DataDir, filepath.Join(cfg.DataDir, adminKeyFile))

	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping...")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	st.shutdown(sctx)
	fmt.Fprintln(stdout, "stopped")
	return nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	return host, port, nil
}
