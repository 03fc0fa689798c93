// Command runner-sdk is a runner built with Latchkey's runner SDK (libs/runner): it
// logs into the demo portal with Go code instead of a recipe, checks the session with
// an HTTP call, and serves a Go API next to the bundle's recipes.
//
// A runner like this one takes the place of `latchkey serve runner` for its pool. It
// needs NATS and the registry's and vault's gRPC addresses, like the stock runner:
//
//	LATCHKEY_NATS_URL=nats://127.0.0.1:4223 \
//	LATCHKEY_REGISTRY_ADDR=127.0.0.1:7400 LATCHKEY_VAULT_ADDR=127.0.0.1:7400 \
//	LATCHKEY_INTERNAL_TOKEN=$(cat ~/.latchkey/internal-token) \
//	go run ./examples/runner-sdk
//
// It reads the stock runner's NATS credential and TLS variables too
// (LATCHKEY_NATS_CREDS, LATCHKEY_NATS_USER, LATCHKEY_NATS_TLS_CA, ...).
//
// Handlers receive the task's chromedp context: everything chromedp can do, they can
// do. The runner restores the session's state before a handler runs and captures it
// afterwards, so a handler never deals with cookies or localStorage itself.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pquerna/otp/totp"

	"github.com/latchkey/latchkey/libs/bus"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner"
	"github.com/latchkey/latchkey/libs/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "runner-sdk:", err)
		os.Exit(1)
	}
}

// run connects to NATS and the services, registers the handlers and runs until ctx
// ends.
func run(ctx context.Context, getenv func(string) string) error {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	natsURL := envOr(getenv, "LATCHKEY_NATS_URL", "nats://127.0.0.1:4223")
	nc, js, err := bus.Connect(ctx, bus.ConnectOptions{
		URL: natsURL, Name: "runner-sdk-example", Logger: log,
		CredsFile: getenv("LATCHKEY_NATS_CREDS"), NKeyFile: getenv("LATCHKEY_NATS_NKEY"), Token: getenv("LATCHKEY_NATS_TOKEN"),
		User: getenv("LATCHKEY_NATS_USER"), Password: getenv("LATCHKEY_NATS_PASSWORD"),
		TLSCA: getenv("LATCHKEY_NATS_TLS_CA"), TLSCert: getenv("LATCHKEY_NATS_TLS_CERT"), TLSKey: getenv("LATCHKEY_NATS_TLS_KEY"),
	})
	if err != nil {
		return err
	}
	defer nc.Close()
	opts := server.DialOptions{Token: getenv("LATCHKEY_INTERNAL_TOKEN"), Service: "latchkey-browser-runner"}
	regConn, err := server.Dial(envOr(getenv, "LATCHKEY_REGISTRY_ADDR", "127.0.0.1:7400"), opts)
	if err != nil {
		return err
	}
	defer regConn.Close()
	vaultConn, err := server.Dial(envOr(getenv, "LATCHKEY_VAULT_ADDR", "127.0.0.1:7400"), opts)
	if err != nil {
		return err
	}
	defer vaultConn.Close()
	backend := runner.GRPC{Registry: registryv1.NewSessionStateServiceClient(regConn), Vault: vaultv1.NewVaultServiceClient(vaultConn)}

	r, err := newRunner(runner.Config{Pool: envOr(getenv, "LATCHKEY_RUNNER_POOL", "default"), Contexts: 2},
		runner.Deps{Logger: log, JS: js, States: backend, Vault: backend, Bundles: backend})
	if err != nil {
		return err
	}
	if err := r.Start(ctx); err != nil {
		return err
	}
	log.Info("runner started", "runner_id", r.ID())
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return r.Stop(sctx)
}

// newRunner builds the runner with this example's handlers.
func newRunner(cfg runner.Config, deps runner.Deps) (*runner.Runner, error) {
	r, err := runner.New(cfg, deps)
	if err != nil {
		return nil, err
	}
	r.Handle(recipe.CreateAPI, login)
	r.Handle(recipe.CheckAPI, check)
	r.Handle("account-name", accountName)
	return r, nil
}

// login is auth-sessions/create in Go: the portal's login form, then its TOTP step
// for users that have one. Wrong passwords are reported as such, so the session is
// not retried into a lockout.
func login(ctx context.Context, t *runner.Task) (any, error) {
	base := t.Vars["baseURL"]
	if base == "" {
		return nil, runner.Fail(runner.ReasonScriptError, "the session has no baseURL var")
	}
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/login"),
		chromedp.SendKeys(chromedp.CSS("#username"), t.Credentials["username"]),
		chromedp.SendKeys(chromedp.CSS("#password"), t.Credentials["password"]),
		chromedp.Click(chromedp.CSS("#login-button")),
		chromedp.WaitVisible(chromedp.CSS("#user-menu, #totp, #login-error")),
	); err != nil {
		return nil, err
	}
	page, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return nil, err
	}
	switch {
	case strings.HasSuffix(page, "/login"):
		return nil, runner.InvalidCredentials("the portal rejected the username or password")
	case strings.Contains(page, "/login/totp"):
		code, err := totp.GenerateCode(t.Credentials["totp_secret"], time.Now())
		if err != nil {
			return nil, runner.Fail(runner.ReasonScriptError, "the credentials have no valid totp_secret")
		}
		if err := chromedp.Do(ctx,
			chromedp.SendKeys(chromedp.CSS("#totp"), code),
			chromedp.Click(chromedp.CSS("#totp-button")),
			chromedp.WaitVisible(chromedp.CSS("#user-menu")),
		); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// check is auth-sessions/check: an HTTP call with the context's cookies. A 401 means
// the saved state is logged out.
func check(ctx context.Context, t *runner.Task) (any, error) {
	base := t.Vars["baseURL"]
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/login")); err != nil {
		return nil, err
	}
	status, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch("/api/me").then(r => r.status)`, chromedp.EvalAwaitPromise))
	switch {
	case err != nil:
		return nil, err
	case status == 401:
		return nil, runner.ErrLoggedOut
	case status != 200:
		return nil, errors.New("the portal answered " + fmt.Sprint(status))
	}
	return nil, nil
}

// accountName is a user API: the name the dashboard shows.
func accountName(ctx context.Context, t *runner.Task) (any, error) {
	if err := chromedp.Do(ctx, chromedp.Navigate(t.Vars["baseURL"]+"/dashboard")); err != nil {
		return nil, err
	}
	name, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#account-name")))
	return map[string]string{"account": name}, err
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}
