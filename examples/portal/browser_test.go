package portal_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/latchkey/latchkey/examples/portal"
)

// chromiumPath finds Chromium: $LATCHKEY_CHROMIUM_PATH, /usr/bin/chromium, or
// chromium on PATH. Without one the test fails: browsers are a real dependency.
func chromiumPath(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("LATCHKEY_CHROMIUM_PATH"); p != "" {
		if _, err := os.Stat(p); err != nil {
			tb.Fatalf("LATCHKEY_CHROMIUM_PATH=%s: %v; point it at a Chromium binary or run scripts/install-deps.sh", p, err)
		}
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	tb.Fatal("no Chromium found (LATCHKEY_CHROMIUM_PATH, /usr/bin/chromium, chromium on PATH); run scripts/install-deps.sh")
	return ""
}

// newBrowser starts a headless Chromium and returns a context for one tab. The
// browser stops in tb.Cleanup.
func newBrowser(tb testing.TB) context.Context {
	tb.Helper()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath(tb)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	ctx, cancel := chromedp.NewContext(allocCtx)
	tb.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// Start the browser now, on a context without a deadline (see chromedp.Run).
	if err := chromedp.Do(ctx); err != nil {
		tb.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

func TestBrowserLogsInAndKeepsTokenInLocalStorage(t *testing.T) {
	_, base := startPortal(t, portal.Config{})
	ctx, cancel := context.WithTimeout(newBrowser(t), 10*time.Second)
	defer cancel()

	err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/login"),
		chromedp.WaitVisible(chromedp.CSS("#username")),
		chromedp.SendKeys(chromedp.CSS("#username"), portal.AliceUsername),
		chromedp.SendKeys(chromedp.CSS("#password"), portal.AlicePassword),
		chromedp.Click(chromedp.CSS("#login-button")),
		chromedp.WaitVisible(chromedp.CSS("#user-menu")),
	)
	if err != nil {
		t.Fatalf("log in through the form: %v", err)
	}
	account, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#account-name")))
	if err != nil || account != "alice" {
		t.Fatalf("#account-name = %q (%v), want alice", account, err)
	}
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](
		`document.getElementById('token-status').textContent === 'token ok'`,
		chromedp.WithPollingTimeout(5*time.Second)))
	if err != nil {
		status, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#token-status")))
		t.Fatalf("#token-status = %q, want %q: %v", status, "token ok", err)
	}
	token, err := chromedp.Run(ctx, chromedp.Evaluate[string](`localStorage.getItem('portal_token')`))
	if err != nil || token == "" {
		t.Fatalf("localStorage portal_token = %q (%v), want the API token", token, err)
	}

	// The browser holds the session cookie as HttpOnly, and the stored token works
	// on its own.
	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base}})
	if err != nil {
		t.Fatalf("read cookies: %v", err)
	}
	var session *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == portal.SessionCookie {
			session = c
		}
	}
	if session == nil || !session.HTTPOnly {
		t.Errorf("browser session cookie = %+v, want an HttpOnly %s", session, portal.SessionCookie)
	}
	r := send(t, "GET", base+"/api/me", nil, withBearer(token))
	if got := decodeJSON[map[string]string](t, r); r.status != http.StatusOK || got["username"] != "alice" {
		t.Errorf("/api/me with the stored token: status %d, body %v; want 200 alice", r.status, got)
	}
}
