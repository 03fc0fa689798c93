package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	"github.com/latchkey/latchkey/libs/browser"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/testkit"
)

// benchRuns and benchConcurrency size both sides of the comparison; the sides take
// turns in benchRounds rounds, so load from elsewhere on the machine falls on both.
const (
	benchRuns        = 60
	benchConcurrency = 2
	benchRounds      = 4
)

// BenchmarkRunsVsLoginEveryTime runs list-invoices side by side in one process:
// through Latchkey with a READY session (check, then the API, in a warm context), and
// as a plain chromedp script that logs in every time in a new browser context. It
// reports Runs/s of both, their ratio, and Latchkey's own overhead per Run:
// end-to-end latency (StartRun to the end of WatchRun) minus the browser time the
// runner measured. The two sides alternate in rounds so that load from elsewhere on
// a shared machine lands on both.
func BenchmarkRunsVsLoginEveryTime(b *testing.B) {
	w := newWorld(b, stacktest.Options{Args: []string{"-log-level", "warn"}})
	sess := w.readySession(b)
	// Steady state: as many warm contexts for the session as Runs run at once.
	var warm sync.WaitGroup
	for range benchConcurrency {
		warm.Go(func() {
			for range 3 {
				if _, err := w.startAndWatch(b.Context(), "list-invoices", sess.GetId()); err != nil {
					b.Errorf("warming up: %v", err) // not Fatal: this is not the benchmark's goroutine
					return
				}
			}
		})
	}
	warm.Wait()
	if b.Failed() {
		b.FailNow()
	}

	alloc, cancel := chromedp.NewExecAllocator(context.Background(), append(browser.AllocatorOptions(), chromedp.ExecPath(testkit.ChromiumPath(b)))...)
	defer cancel()
	browserCtx, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	if err := chromedp.Do(browserCtx); err != nil {
		b.Fatal(err)
	}

	var mu sync.Mutex
	var overhead, latency []time.Duration
	latchkeyRun := func() {
		began := time.Now()
		run, err := w.startAndWatch(b.Context(), "list-invoices", sess.GetId())
		total := time.Since(began)
		if err != nil {
			b.Error(err) // not Fatal: parallel runs this on its own goroutines
			return
		}
		if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			b.Errorf("run %s: %s", run.GetState(), run.GetFailureMessage())
			return
		}
		mu.Lock()
		latency = append(latency, total)
		overhead = append(overhead, total-run.GetBrowserTime().AsDuration())
		mu.Unlock()
	}
	scriptRun := func() {
		if err := loginEveryTime(browserCtx, w.portalURL); err != nil {
			b.Errorf("script: %v", err)
		}
	}
	var lkTime, scriptTime time.Duration
	for range benchRounds {
		lkTime += inParallel(benchRuns/benchRounds, benchConcurrency, func(int) { latchkeyRun() })
		scriptTime += inParallel(benchRuns/benchRounds, benchConcurrency, func(int) { scriptRun() })
	}
	lkRate := float64(benchRuns) / lkTime.Seconds()
	scriptRate := float64(benchRuns) / scriptTime.Seconds()

	b.ReportMetric(lkRate, "latchkey-runs/s")
	b.ReportMetric(scriptRate, "login-script-runs/s")
	b.ReportMetric(lkRate/scriptRate, "ratio")
	b.ReportMetric(ms(pct(latency, 50)), "latency-p50-ms")
	b.ReportMetric(ms(pct(latency, 95)), "latency-p95-ms")
	b.ReportMetric(ms(pct(overhead, 50)), "overhead-p50-ms")
	b.ReportMetric(ms(pct(overhead, 95)), "overhead-p95-ms")
	b.Logf("%d runs each, in %d alternating rounds, at concurrency %d: latchkey %.1f runs/s, login-every-time script %.1f runs/s (%.1fx); overhead p50 %.1f ms p95 %.1f ms",
		benchRuns, benchRounds, benchConcurrency, lkRate, scriptRate, lkRate/scriptRate, ms(pct(overhead, 50)), ms(pct(overhead, 95)))
}

// loginEveryTime is what an automation without Latchkey does: a fresh browser
// context, the login form, then the invoices table.
func loginEveryTime(browserCtx context.Context, base string) error {
	ctx, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 30*time.Second)
	defer cancelT()
	err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/login"),
		chromedp.WaitVisible(chromedp.CSS("#username")),
		chromedp.SendKeys(chromedp.CSS("#username"), portal.AliceUsername),
		chromedp.SendKeys(chromedp.CSS("#password"), portal.AlicePassword),
		chromedp.Click(chromedp.CSS("#login-button")),
		chromedp.WaitVisible(chromedp.CSS("#user-menu")),
		chromedp.Navigate(base+"/invoices"),
		chromedp.WaitVisible(chromedp.CSS("#invoices")),
	)
	if err != nil {
		return err
	}
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#invoices tbody tr").length`))
	if err == nil && rows == 0 {
		err = fmt.Errorf("no invoice rows")
	}
	return err
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
