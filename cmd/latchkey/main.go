// Command latchkey is Latchkey's one binary: `latchkey dev` runs every service in one
// process, `latchkey serve <service>` runs one against external NATS and Redis, and the
// other subcommands are the client.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/latchkey/latchkey/libs/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], config.OSEnv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "latchkey:", describe(err))
		os.Exit(exitCode(err))
	}
}
