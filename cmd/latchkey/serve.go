package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/latchkey/latchkey/internal/stack"
	"github.com/latchkey/latchkey/libs/config"
	"github.com/latchkey/latchkey/libs/logging"
)

// runServe runs one service against external NATS (and Redis), as in production.
func runServe(ctx context.Context, name string, cfg *config.Config, env config.Env, stdout, stderr io.Writer) error {
	if !slices.Contains(stack.ServiceNames, name) {
		return fmt.Errorf("unknown service %q: one of %s", name, strings.Join(stack.ServiceNames, ", "))
	}
	if cfg.NATSURL == "" {
		return errors.New("serve needs -nats-url (LATCHKEY_NATS_URL); `latchkey dev` runs an embedded server")
	}
	if cfg.InternalToken == "" {
		return errors.New("serve needs -internal-token (LATCHKEY_INTERNAL_TOKEN), the same in every service")
	}
	log, err := logging.New(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	log = log.With("process", "latchkey-"+name)
	log.Info("starting", "config", *cfg)
	st, err := stack.Start(ctx, cfg, []string{name}, stack.Options{Env: env, Logger: log})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "latchkey %s serving gRPC on %s, HTTP on %s\n", name, st.GRPCAddr(), st.HTTPAddr())
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	st.Shutdown(sctx)
	return nil
}
