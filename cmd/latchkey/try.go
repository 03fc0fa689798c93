package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/latchkey/latchkey/libs/config"
	"github.com/latchkey/latchkey/libs/recipe"
	sdk "github.com/latchkey/latchkey/libs/runner"
	"github.com/latchkey/latchkey/libs/storagestate"
)

const tryUsage = `Usage: latchkey try API --bundle DIR [flags]

Runs one API of a recipe bundle in a local browser, without the services, printing
each step and the output. Flags:
`

// runTry is `latchkey try`: the loop in which users write recipes.
func runTry(ctx context.Context, args []string, env config.Env, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("latchkey try", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, tryUsage); fs.PrintDefaults() }
	bundleDir := fs.String("bundle", ".", "the bundle folder (its .yaml and .yml files)")
	credsFile := fs.String("credentials", "", "a JSON file of credentials for auth-sessions/create, such as {\"username\": \"...\", \"password\": \"...\"}")
	stateIn := fs.String("state", "", "a Playwright storageState JSON file to restore first")
	stateOut := fs.String("save-state", "", "write the state the browser ends with to this file (Playwright storageState JSON, mode 0600)")
	paramsJSON := fs.String("params", "", "the API's params as a JSON object")
	varsJSON := fs.String("vars", "", "vars as a JSON object of strings, over the bundle's vars")
	answersJSON := fs.String("answers", "", "answers to ask steps as a JSON object; unanswered questions are read from the terminal")
	defChromium, _ := env("LATCHKEY_CHROMIUM_PATH")
	chromium := fs.String("chromium-path", defChromium, "Chromium binary; empty auto-detects")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long the API may run")
	api, rest := "", args
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		api, rest = args[0], args[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if api == "" && fs.NArg() > 0 {
		api = fs.Arg(0)
	}
	if api == "" {
		fs.Usage()
		return errors.New("try needs an API name, for example: latchkey try auth-sessions/check --bundle ./automations")
	}
	bundle, err := loadBundle(*bundleDir)
	if err != nil {
		return err
	}
	lr := sdk.LocalRun{Bundle: bundle, API: api}
	if err := decodeFlagJSON("params", *paramsJSON, &lr.Params); err != nil {
		return err
	}
	if err := decodeFlagJSON("vars", *varsJSON, &lr.Vars); err != nil {
		return err
	}
	answers := map[string]string{}
	if err := decodeFlagJSON("answers", *answersJSON, &answers); err != nil {
		return err
	}
	if *credsFile != "" {
		b, err := os.ReadFile(*credsFile)
		if err != nil {
			return fmt.Errorf("reading credentials: %w", err)
		}
		if err := json.Unmarshal(b, &lr.Credentials); err != nil {
			return fmt.Errorf("credentials file %s: must be a JSON object of strings", *credsFile)
		}
	}
	if *stateIn != "" {
		b, err := os.ReadFile(*stateIn)
		if err != nil {
			return fmt.Errorf("reading state: %w", err)
		}
		if lr.State, err = storagestate.FromPlaywright(b); err != nil {
			return fmt.Errorf("state file %s: %w", *stateIn, err)
		}
	}
	lr.Observer = func(ev sdk.StepEvent) { printStep(stdout, ev) }
	in := bufio.NewReader(os.Stdin)
	lr.Ask = func(_ context.Context, q sdk.Question) (string, error) {
		if a, ok := answers[q.Field]; ok {
			return a, nil
		}
		fmt.Fprintf(stdout, "? %s (%s): ", apiOrPrompt(q), q.Field)
		line, err := in.ReadString('\n')
		if err != nil && line == "" {
			return "", fmt.Errorf("reading the answer to %s: %w", q.Field, err)
		}
		return strings.TrimSpace(line), nil
	}
	lr.Artifact = func(id string, png []byte) {
		name := strings.ReplaceAll(id, "/", "-")
		if err := os.WriteFile(name, png, 0o600); err == nil {
			fmt.Fprintf(stdout, "  screenshot saved to %s\n", name)
		}
	}
	r, err := sdk.New(sdk.Config{Pool: "try", Contexts: 1, ChromiumPath: *chromium, TaskTimeout: *timeout},
		sdk.Deps{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = r.Stop(sctx)
	}()
	fmt.Fprintf(stdout, "%s\n", api)
	res, err := r.RunLocal(ctx, lr)
	if err != nil {
		return fmt.Errorf("running %s: %w", api, err)
	}
	return reportTry(stdout, api, res, *stateOut)
}

func reportTry(stdout io.Writer, api string, res *sdk.LocalResult, stateOut string) error {
	if api == recipe.CheckAPI {
		fmt.Fprintf(stdout, "check: %s\n", strings.TrimPrefix(res.Outcome.String(), "CHECK_OUTCOME_"))
	}
	if res.Output != nil {
		b, _ := json.MarshalIndent(res.Output, "", "  ")
		fmt.Fprintf(stdout, "output:\n%s\n", b)
	}
	if stateOut != "" && res.State != nil {
		b, err := storagestate.ToPlaywright(res.State)
		if err != nil {
			return err
		}
		if err := os.WriteFile(stateOut, b, 0o600); err != nil {
			return fmt.Errorf("writing state: %w", err)
		}
		fmt.Fprintf(stdout, "state saved to %s (%d cookies, %d origins)\n", stateOut, len(res.State.GetCookies()), len(res.State.GetOrigins()))
	}
	if res.Failure != nil {
		return fmt.Errorf("%s failed: %s", api, res.Failure.Error())
	}
	return nil
}

func printStep(w io.Writer, ev sdk.StepEvent) {
	mark := map[string]string{"ok": "ok", "skipped": "skip", "ignored": "ign", "failed": "FAIL"}[ev.Status]
	what := string(ev.Kind)
	if ev.Name != "" {
		what += " " + fmt.Sprintf("%q", ev.Name)
	}
	if ev.Selector != "" {
		what += " " + ev.Selector
	}
	fmt.Fprintf(w, "  %-4s %2d %s (%s)\n", mark, ev.Index, what, ev.Duration.Round(time.Millisecond))
	if ev.Note != "" {
		fmt.Fprintf(w, "       %s\n", ev.Note)
	}
	if ev.Status == "ignored" && ev.Err != nil {
		fmt.Fprintf(w, "       optional step failed: %v\n", ev.Err)
	}
}

func apiOrPrompt(q sdk.Question) string {
	if q.Prompt != "" {
		return q.Prompt
	}
	return "answer"
}

func decodeFlagJSON(name, text string, into any) error {
	if text == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(text), into); err != nil {
		return fmt.Errorf("--%s: not a JSON object of the right shape: %v", name, err)
	}
	return nil
}

// loadBundle reads every .yaml and .yml file under dir and validates the bundle.
func loadBundle(dir string) (*recipe.Bundle, error) {
	var files []recipe.File
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files = append(files, recipe.File{Path: filepath.ToSlash(rel), Content: b})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading bundle %s: %w", dir, err)
	}
	b, err := recipe.Parse(files, recipe.Options{})
	if err != nil {
		return nil, fmt.Errorf("bundle %s is invalid:\n%w", dir, err)
	}
	return b, nil
}
