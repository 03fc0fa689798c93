package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/latchkey/latchkey/internal/stack"
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
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
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
	st, err := stack.Start(ctx, cfg, stack.ServiceNames, stack.Options{Env: env, Logger: log})
	if err != nil {
		return err
	}
	if created, err := ensureDevProject(ctx, st.GRPCAddr(), cfg.AdminKey, cfg.DataDir); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		st.Shutdown(sctx)
		return err
	} else if created {
		log.Info("created the default project's API key", "project_id", DevProject, "file", filepath.Join(cfg.DataDir, DevAPIKeyFile))
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
`, time.Since(began).Round(time.Millisecond), st.GRPCAddr(), st.HTTPAddr(), natsURL,
		cfg.DataDir, filepath.Join(cfg.DataDir, adminKeyFile))

	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping...")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	st.Shutdown(sctx)
	fmt.Fprintln(stdout, "stopped")
	return nil
}
