// Package runner is Latchkey's runner SDK: build a runner that keeps browser
// automations logged in, with your own Go handlers next to the recipes of a project's
// bundle (DESIGN.md sections 3 and 7). The browser-runner service is this SDK with
// recipes only.
//
// A Runner keeps a few long-lived Chromium processes, each hosting many isolated browser
// contexts. A context belongs to one AuthSession for its whole life and stays warm
// between that session's tasks. The Runner takes tasks from JetStream (LK_TASKS,
// lk.tasks.<pool>), restores the session's storage state, runs the session's check,
// its create or an API — a Go Handler registered with Handle, or else a recipe of the
// project's bundle — captures the state the browser ends with, seals it through the
// vault and answers on lk.results.<run>.
//
// A runner with a Go login and a Go API, over the registry's and the vault's gRPC
// clients:
//
//	backend := runner.GRPC{Registry: registryClient, Vault: vaultClient}
//	r, err := runner.New(runner.Config{Pool: "default"}, runner.Deps{
//		Logger: log, JS: js, States: backend, Vault: backend, Bundles: backend,
//	})
//	if err != nil {
//		return err
//	}
//	r.Handle("auth-sessions/create", func(ctx context.Context, t *runner.Task) (any, error) {
//		// ctx is the task's chromedp context; the state it ends with is captured.
//		if err := chromedp.Run(ctx, chromedp.Navigate(t.Vars["baseURL"]+"/login"),
//			chromedp.SendKeys("#username", t.Credentials["username"]),
//			chromedp.SendKeys("#password", t.Credentials["password"]),
//			chromedp.Click("#login")); err != nil {
//			return nil, err
//		}
//		return nil, nil // or runner.InvalidCredentials("the site rejected the password")
//	})
//	r.Handle("list-invoices", func(ctx context.Context, t *runner.Task) (any, error) {
//		return chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#invoices")))
//	})
//	if err := r.Start(ctx); err != nil {
//		return err
//	}
//	defer r.Stop(shutdownCtx)
//
// Handlers say what went wrong with InvalidCredentials, Fail, or, from a check,
// ErrLoggedOut; a handler that panics fails SCRIPT_ERROR. Runner.RunLocal runs one
// recipe with no services (latchkey try); Runner.Execute runs one task without
// JetStream. The example examples/runner-sdk logs into the demo portal in Go.
//
// This package is the SDK's whole API. Runner, Config, Deps and the handler's types
// are aliases of the engine's definitions (under internal/), which stay out of reach:
// the browser pool, the warm contexts and their hand-over between runners, the
// recipe interpreter and the recorder's live view.
package runner
