package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/latchkey/latchkey/internal/stack"
	"github.com/latchkey/latchkey/libs/config"
	"github.com/latchkey/latchkey/libs/logging"
	"github.com/latchkey/latchkey/libs/server"
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
	var clientTLS *tls.Config
	if cfg.DevTLS && cfg.TLSCert == "" {
		pki, err := server.GenerateDevPKI(filepath.Join(cfg.DataDir, "tls"), "latchkey", "client")
		if err != nil {
			return fmt.Errorf("generating the dev CA and certificates: %w", err)
		}
		cfg.TLSCert, cfg.TLSKey, cfg.TLSCA = pki.Cert("latchkey"), pki.Key("latchkey"), pki.CA()
	}
	if cfg.TLSCert != "" {
		if clientTLS, err = server.ClientTLSConfig(cfg.TLSCA, cfg.TLSCert, cfg.TLSKey); err != nil {
			return err
		}
	}
	log.Debug("configuration", "config", *cfg)
	st, err := stack.Start(ctx, cfg, stack.ServiceNames, stack.Options{Env: env, Logger: log})
	if err != nil {
		return err
	}
	if created, err := ensureDevProject(ctx, st.GRPCAddr(), cfg.AdminKey, cfg.DataDir, clientTLS); err != nil {
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
	scheme, tlsLine := "http", ""
	if clientTLS != nil {
		dir := filepath.Dir(cfg.TLSCA)
		scheme = "https"
		tlsLine = fmt.Sprintf("  TLS      gRPC and HTTP; the CLI: -ca %s -cert %s -key %s\n", cfg.TLSCA,
			filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem"))
	}
	fmt.Fprintf(stdout, `latchkey dev is up (%s)
  gRPC     %s   every public API, plus health and reflection
  HTTP     %s://%s   /healthz  /metrics
  NATS     %s   JetStream
  data     %s
  admin    key in %s
%sCtrl-C stops it.
`, time.Since(began).Round(time.Millisecond), st.GRPCAddr(), scheme, st.HTTPAddr(), natsURL,
		cfg.DataDir, filepath.Join(cfg.DataDir, adminKeyFile), tlsLine)

	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping...")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	st.Shutdown(sctx)
	fmt.Fprintln(stdout, "stopped")
	return nil
}
