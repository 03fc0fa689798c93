// Command composecheck validates compose files against the Compose Specification with
// compose-go, the loader `docker compose` itself uses, so `make lint` keeps
// docker-compose.yml valid on machines with no Docker engine.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "composecheck:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, files []string) error {
	if len(files) == 0 {
		return fmt.Errorf("usage: composecheck FILE...")
	}
	opts, err := cli.NewProjectOptions(files, cli.WithWorkingDirectory(filepath.Dir(files[0])), cli.WithOsEnv, cli.WithConsistency(true))
	if err != nil {
		return err
	}
	p, err := opts.LoadProject(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("%s: valid, %d services: %v\n", files[0], len(p.Services), p.ServiceNames())
	return nil
}
