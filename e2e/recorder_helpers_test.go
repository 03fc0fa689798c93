package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/latchkey/latchkey/libs/browser"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/testkit"
)

// The recorder tests play the person with a second Chromium: it opens the recorder
// URL and clicks and types into the live view through the recorder page's own script,
// exactly as a person's browser would.

// recorderSession creates a RECORDER session for the portal: the person starts at its
// login page and is done on its dashboard.
func (w *world) recorderSession(t testing.TB) *latchkeyv1.AuthSession {
	t.Helper()
	resp, err := w.sessions.CreateAuthSession(t.Context(), &latchkeyv1.CreateAuthSessionRequest{
		Type: latchkeyv1.SessionType_SESSION_TYPE_RECORDER, Vars: map[string]string{"baseURL": w.portalURL},
		Recorder: &latchkeyv1.RecorderSettings{StartUrl: w.portalURL + "/login", FinishUrlPrefix: w.portalURL + "/dashboard"},
	})
	if err != nil {
		t.Fatalf("CreateAuthSession RECORDER: %v", err)
	}
	return resp.GetAuthSession()
}

func (w *world) recorderURL(t testing.TB, session string) *latchkeyv1.CreateRecorderUrlResponse {
	t.Helper()
	resp, err := w.sessions.CreateRecorderUrl(t.Context(), &latchkeyv1.CreateRecorderUrlRequest{AuthSessionId: session})
	if err != nil {
		t.Fatalf("CreateRecorderUrl: %v", err)
	}
	return resp
}

// personBrowser starts the person's Chromium, with a window large enough to show
// the whole live view.
func personBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(browser.AllocatorOptions(), chromedp.ExecPath(testkit.ChromiumPath(t)), chromedp.WindowSize(1400, 1000))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("starting the person's browser: %v", err)
	}
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return ctx
}

// point is a position as a fraction of the hosted viewport.
type point struct{ X, Y float64 }

// loginTargets finds where the portal's login fields are in the hosted browser's
// 1280x800 viewport, by loading the login page in a tab of the same size. (The
// person sees them in the live view; the test needs numbers.)
func loginTargets(t *testing.T, person context.Context, portalURL string) map[string]point {
	t.Helper()
	tab, cancel := chromedp.NewContext(person)
	defer cancel()
	if _, err := chromedp.Call(tab, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: 1280, Height: 800, DeviceScaleFactor: 1}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.Navigate(portalURL+"/login"), chromedp.WaitVisible(chromedp.CSS("#login-button"))); err != nil {
		t.Fatal(err)
	}
	got, err := chromedp.Run(tab, chromedp.Evaluate[map[string]point](`(() => {
		const out = {};
		for (const id of ["username", "password", "login-button"]) {
			const r = document.getElementById(id).getBoundingClientRect();
			out[id] = {X: (r.left + r.width / 2) / innerWidth, Y: (r.top + r.height / 2) / innerHeight};
		}
		return out;
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// openRecorder opens the recorder URL in a new tab of the person's browser and waits
// for the first frame of the live view.
func openRecorder(t *testing.T, person context.Context, url string) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(person)
	t.Cleanup(cancel)
	if err := chromedp.Do(tab, chromedp.Navigate(url)); err != nil {
		t.Fatalf("opening the recorder page: %v", err)
	}
	waitPage(t, tab, "the first frame of the live view", `document.getElementById("screen").naturalWidth > 0 && document.body.dataset.state === "recording"`)
	return tab
}

// waitPage polls a JavaScript condition on the recorder page.
func waitPage(t *testing.T, tab context.Context, what, cond string) {
	t.Helper()
	eventuallyWith(t, 60*time.Second, func() (bool, string) {
		ok, err := chromedp.Run(tab, chromedp.Evaluate[bool](cond))
		return err == nil && ok, fmt.Sprintf("waiting for %s (evaluating: %v)", what, err)
	}, func() string {
		state, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.getElementById("status").textContent`))
		return fmt.Sprintf("the page says %q", state)
	})
}

// clickScreen clicks the live view at a fraction of the hosted viewport, with a real
// mouse click on the picture the page shows.
func clickScreen(t *testing.T, tab context.Context, p point) {
	t.Helper()
	r, err := chromedp.Run(tab, chromedp.Evaluate[struct{ L, T, W, H float64 }](`(() => {
		const r = document.getElementById("screen").getBoundingClientRect();
		return {L: r.left, T: r.top, W: r.width, H: r.height};
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.MouseClickXY(r.L+p.X*r.W, r.T+p.Y*r.H)); err != nil {
		t.Fatalf("clicking the live view: %v", err)
	}
}

// typeKeys types text on the recorder page as key presses.
func typeKeys(t *testing.T, tab context.Context, text string) {
	t.Helper()
	if err := chromedp.Do(tab, chromedp.KeyEvent(text)); err != nil {
		t.Fatalf("typing: %v", err)
	}
}

// httpGet fetches url with client and returns the status and body.
func httpGet(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := make([]byte, 4096)
	n, _ := resp.Body.Read(b)
	return resp.StatusCode, string(b[:n])
}

// newClient is an HTTP client with its own cookies: another browser.
func newClient(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 30 * time.Second}
}

func fmtRun(r *latchkeyv1.Run) string {
	return fmt.Sprintf("%s %s %q", r.GetState(), r.GetFailureReason(), r.GetFailureMessage())
}
