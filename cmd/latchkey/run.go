package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/latchkey/latchkey/internal/stack"
	"github.com/latchkey/latchkey/libs/config"
)

const usage = `latchkey keeps browser automations logged in.

Usage:
  latchkey dev [flags]                 run every service in one process (embedded NATS)
  latchkey serve SERVICE [flags]       run one service: registry, vault, runner or scheduler
  latchkey try API --bundle DIR [...]  run one recipe in a local browser, printing each step
  latchkey version                     print the version
  latchkey completion bash|zsh         shell completion: source <(latchkey completion bash)

Client commands (talk to $LATCHKEY_ADDR with $LATCHKEY_API_KEY or the dev key; the
flags -addr, -api-key, -o table|json and -ca/-cert/-key go anywhere on the line, as in
"latchkey sessions list -o json"; "latchkey GROUP -h" lists a group's commands):
  latchkey projects create|list|delete|keys ...
  latchkey sessions create|get|list|update|update-credentials|delete|import|export ...
  latchkey automations deploy DIR|list|bundles
  latchkey runs start API -session ID [-params JSON] [-wait]|get|list|watch|cancel|resume|trace ...
  latchkey jobs create -api API -session ID [-cron|-every|-at] [-payloads JSON]|get|list|
                update|delete|pause|resume|trigger|runs ...
  latchkey audit [SESSION_OR_SECRET_ID]
  latchkey vault status|rotate|rewrap|min-version N   (operators; internal token)

Run "latchkey dev -h" for the flags; each flag also reads a LATCHKEY_* variable.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// run is the whole program; main only adds the signal context and the exit code.
func run(ctx context.Context, args []string, env config.Env, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "dev":
		cfg, err := parseConfig("dev", rest, env, stderr)
		if err != nil {
			return err
		}
		return runDev(ctx, cfg, env, stdout, stderr)
	case "serve":
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			return fmt.Errorf("serve needs a service: one of %s", strings.Join(stack.ServiceNames, ", "))
		}
		cfg, err := parseConfig("serve "+rest[0], rest[1:], env, stderr)
		if err != nil {
			return err
		}
		return runServe(ctx, rest[0], cfg, env, stdout, stderr)
	case "try":
		return runTry(ctx, rest, env, stdout, stderr)
	case "completion":
		return runCompletion(rest, stdout)
	case "version":
		fmt.Fprintln(stdout, "latchkey", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		if sub, ok := clientCommands()[cmd]; ok {
			c, subArgs, err := newCLI(env, stdout, stderr, rest)
			if err != nil {
				return err
			}
			defer c.close()
			return sub(ctx, c, subArgs)
		}
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func parseConfig(name string, args []string, env config.Env, stderr io.Writer) (*config.Config, error) {
	fs := flag.NewFlagSet("latchkey "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := config.Register(fs, env)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}
