package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	"github.com/latchkey/latchkey/libs/browser"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/testkit"
)

// BenchmarkBurstDrain measures the stall a user with a busy session sees when the site
// logs them out: N Runs started at once on a session whose state the portal has just
// expired. Per N it reports the logins (1 is right), the seconds until the last Run
// ended, and the ratio of that drain to its floor measured in the same run — one login
// plus N Runs at the warm rate: drain ÷ (login + N ÷ warm Runs/s). 1.0 is the floor.
func BenchmarkBurstDrain(b *testing.B) {
	w := newWorld(b, stacktest.Options{Args: []string{"-log-level", "warn"}})
	sess := w.readySession(b)
	// The warm rate, measured as the bursts are: Runs of the READY session started at
	// once, from the first start to the last end.
	const warmRuns = 60
	conc := w.st.Config.RunnerContexts
	w.waitAll(b, w.startMany(b, conc, "list-invoices", sess.GetId()), time.Minute) // warm the contexts
	began := time.Now()
	warmRate := warmRuns / lastEnd(b, w.waitAll(b, w.startMany(b, warmRuns, "list-invoices", sess.GetId()), time.Minute)).Sub(began).Seconds()

	b.Logf("warm: %.1f Runs/s (%d Runs started at once, %d runner contexts)", warmRate, warmRuns, conc)
	b.Logf("%6s %7s %9s %9s %8s %7s", "runs", "logins", "login s", "drain s", "floor s", "ratio")
	for _, n := range []int{20, 200, 500} {
		w.portal.ExpireSessions()
		logins := w.portal.Counters().Logins
		began := time.Now()
		drain := lastEnd(b, w.waitAll(b, w.startMany(b, n, "list-invoices", sess.GetId()), 2*time.Minute)).Sub(began)
		login := w.lastLogin(b, sess.GetId())
		floor := login + time.Duration(float64(n)/warmRate*float64(time.Second))
		ratio := drain.Seconds() / floor.Seconds()
		b.Logf("%6d %7d %9.2f %9.2f %8.2f %7.2f", n, w.portal.Counters().Logins-logins, login.Seconds(), drain.Seconds(), floor.Seconds(), ratio)
		b.ReportMetric(ratio, fmt.Sprintf("drain-ratio-%d", n))
		b.ReportMetric(drain.Seconds(), fmt.Sprintf("drain-s-%d", n))
	}
	b.ReportMetric(warmRate, "warm-runs/s")
}

// lastEnd returns when the last of runs ended; every one must have SUCCEEDED.
func lastEnd(tb testing.TB, runs []*latchkeyv1.Run) time.Time {
	tb.Helper()
	var last time.Time
	for _, run := range runs {
		if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			tb.Fatalf("run %s = %s: %s", run.GetId(), run.GetState(), run.GetFailureMessage())
		}
		if t := run.GetEndTime().AsTime(); t.After(last) {
			last = t
		}
	}
	return last
}

// lastLogin returns how long the session's newest AUTHSESSION_CREATE Run took: the
// login and the check of its state in a fresh context.
func (w *world) lastLogin(tb testing.TB, session string) time.Duration {
	tb.Helper()
	resp, err := w.runs.ListRuns(tb.Context(), &latchkeyv1.ListRunsRequest{
		AuthSessionId: session, Kinds: []latchkeyv1.RunKind{latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE}, PageSize: 1,
	})
	if err != nil || len(resp.GetRuns()) == 0 {
		tb.Fatalf("ListRuns of the session's logins: %v (%d)", err, len(resp.GetRuns()))
	}
	run := resp.GetRuns()[0]
	return run.GetEndTime().AsTime().Sub(run.GetStartTime().AsTime())
}

// startConcurrently runs n Runs, at most conc at once (each waits for its Run to end
// before the next starts), and returns their ids.
func (w *world) startConcurrently(tb testing.TB, n, conc int, api, session string) []string {
	tb.Helper()
	ids := make([]string, n)
	var next sync.Mutex
	i := 0
	take := func() (int, bool) {
		next.Lock()
		defer next.Unlock()
		i++
		return i - 1, i <= n
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range conc {
		wg.Go(func() {
			for k, ok := take(); ok; k, ok = take() {
				resp, err := w.runs.StartRun(tb.Context(), &latchkeyv1.StartRunRequest{Api: api, AuthSessionId: session})
				if err != nil {
					errs <- err
					return
				}
				ids[k] = resp.GetRun().GetId()
				if _, err := w.watch(tb.Context(), ids[k]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	return ids
}

// BenchmarkWarmRunsVsBareLoop compares, side by side in one process, Runs through
// Latchkey on a READY session (StartRun to the end of WatchRun: the check, then
// list-invoices, in a warm context, the state captured and written back) with a bare
// chromedp loop doing the same work in an already logged-in browser context (fetch
// /api/me with the cookies, load /invoices, read the table, read the cookies), at
// concurrency 1 and 2, in alternating rounds. It reports the ratio of their rates
// (1.0: Latchkey costs nothing over the bare loop) and Latchkey's own overhead per Run:
// end-to-end latency minus the browser time the runner measured.
func BenchmarkWarmRunsVsBareLoop(b *testing.B) {
	w := newWorld(b, stacktest.Options{Args: []string{"-log-level", "warn"}})
	sess := w.readySession(b)

	alloc, cancel := chromedp.NewExecAllocator(context.Background(), append(browser.AllocatorOptions(), chromedp.ExecPath(testkit.ChromiumPath(b)))...)
	defer cancel()
	browserCtx, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	if err := chromedp.Do(browserCtx); err != nil {
		b.Fatal(err)
	}
	barePID := chromedp.FromContext(browserCtx).Browser.Process().Pid
	// One logged-in browser context with a tab per concurrent loop.
	loggedIn, cancelLogged := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
	defer cancelLogged()
	if err := chromedp.Do(loggedIn,
		chromedp.Navigate(w.portalURL+"/login"),
		chromedp.WaitVisible(chromedp.CSS("#username")),
		chromedp.SendKeys(chromedp.CSS("#username"), portal.AliceUsername),
		chromedp.SendKeys(chromedp.CSS("#password"), portal.AlicePassword),
		chromedp.Click(chromedp.CSS("#login-button")),
		chromedp.WaitVisible(chromedp.CSS("#user-menu")),
	); err != nil {
		b.Fatal(err)
	}
	const runs, rounds = 60, 4
	for _, conc := range []int{1, 2} {
		tabs := []context.Context{loggedIn}
		for len(tabs) < conc {
			tab, cancelTab := chromedp.NewContext(loggedIn)
			defer cancelTab()
			if err := chromedp.Do(tab, chromedp.Navigate(w.portalURL+"/invoices")); err != nil {
				b.Fatal(err)
			}
			tabs = append(tabs, tab)
		}
		// Warm both sides: as many warm contexts for the session as Runs run at once.
		w.startConcurrently(b, 2*conc, conc, "list-invoices", sess.GetId())
		var mu sync.Mutex
		var overhead, browserTime, bareTimes []time.Duration
		lkRun := func(int) {
			began := time.Now()
			resp, err := w.runs.StartRun(b.Context(), &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: sess.GetId()})
			if err != nil {
				b.Errorf("StartRun: %v", err)
				return
			}
			run, err := w.watch(b.Context(), resp.GetRun().GetId())
			total := time.Since(began)
			if err != nil || run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
				b.Errorf("run %s (%v): %s", run.GetState(), err, run.GetFailureMessage())
				return
			}
			mu.Lock()
			overhead = append(overhead, total-run.GetBrowserTime().AsDuration())
			browserTime = append(browserTime, run.GetBrowserTime().AsDuration())
			mu.Unlock()
		}
		bareRun := func(worker int) {
			began := time.Now()
			if err := bareWarmRun(tabs[worker], w.portalURL); err != nil {
				b.Errorf("bare loop: %v", err)
			}
			mu.Lock()
			bareTimes = append(bareTimes, time.Since(began))
			mu.Unlock()
		}
		var lkTime, bareTime time.Duration
		var lkCPU, bareCPU cpuTimes
		for range rounds {
			c0 := readCPU(barePID)
			lkTime += inParallel(runs/rounds, conc, lkRun)
			c1 := readCPU(barePID)
			bareTime += inParallel(runs/rounds, conc, bareRun)
			c2 := readCPU(barePID)
			lkCPU, bareCPU = lkCPU.add(c1.sub(c0)), bareCPU.add(c2.sub(c1))
		}
		lkRate, bareRate := runs/lkTime.Seconds(), runs/bareTime.Seconds()
		b.Logf("concurrency %d: latchkey %.1f Runs/s, bare loop %.1f Runs/s, ratio %.2f; overhead p50 %.1f ms p99 %.1f ms; "+
			"p50 of the runner's browser time %.1f ms, of a bare iteration %.1f ms",
			conc, lkRate, bareRate, lkRate/bareRate, ms(pct(overhead, 50)), ms(pct(overhead, 99)), ms(pct(browserTime, 50)), ms(pct(bareTimes, 50)))
		b.Logf("  runner browser time p10/p50/p90/max %s; overhead %s; bare iteration %s", spread(browserTime), spread(overhead), spread(bareTimes))
		// Each side's CPU per Run: its browser's across both sides' rounds (a browser
		// goes on working — garbage collection, unloading pages — after its round
		// ends), and the Go process's during its own rounds (the services, NATS and
		// the portal for Latchkey; the portal and chromedp for the bare loop).
		perRun := func(d time.Duration) float64 { return ms(d) / runs }
		lkBrowser, bareBrowser := lkCPU.children+bareCPU.children, lkCPU.tree+bareCPU.tree
		b.Logf("  CPU per Run: latchkey %.1f ms (the runner's Chromium and redis %.1f, Go %.1f), bare loop %.1f ms (its Chromium %.1f, Go %.1f)",
			perRun(lkBrowser+lkCPU.self), perRun(lkBrowser), perRun(lkCPU.self), perRun(bareBrowser+bareCPU.self), perRun(bareBrowser), perRun(bareCPU.self))
		b.ReportMetric(perRun(lkBrowser+lkCPU.self)/perRun(bareBrowser+bareCPU.self), fmt.Sprintf("cpu-per-run-ratio-c%d", conc))
		b.ReportMetric(lkRate/bareRate, fmt.Sprintf("ratio-c%d", conc))
		b.ReportMetric(ms(pct(overhead, 50)), fmt.Sprintf("overhead-p50-ms-c%d", conc))
		b.ReportMetric(ms(pct(overhead, 99)), fmt.Sprintf("overhead-p99-ms-c%d", conc))
	}
}

// bareWarmRun is list-invoices without Latchkey in a logged-in tab: the check's
// request, the page, the table, and the cookies a Run captures.
func bareWarmRun(tab context.Context, base string) error {
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	code, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch("/api/me", {credentials: "include"}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("check answered %d", code)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/invoices"), chromedp.WaitVisible(chromedp.CSS("#invoices"))); err != nil {
		return err
	}
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]map[string]string](`[...document.querySelectorAll("#invoices tbody tr")].map(tr => {
		const td = tr.querySelectorAll("td");
		return {number: td[0].innerText, date: td[1].innerText, amount: td[2].innerText, status: td[3].innerText};
	})`))
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return fmt.Errorf("no invoice rows")
	}
	_, err = chromedp.CallBrowser(ctx, storage.GetCookies, storage.GetCookiesParams{BrowserContextID: chromedp.FromContext(ctx).BrowserContextID})
	return err
}

// inParallel runs f n times on conc goroutines (f gets its goroutine's index) and
// returns how long it took.
func inParallel(n, conc int, f func(worker int)) time.Duration {
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	began := time.Now()
	var wg sync.WaitGroup
	for worker := range conc {
		wg.Go(func() {
			for range jobs {
				f(worker)
			}
		})
	}
	wg.Wait()
	return time.Since(began)
}

// spread is p10/p50/p90/max of d in milliseconds.
func spread(d []time.Duration) string {
	return fmt.Sprintf("%.0f/%.0f/%.0f/%.0f ms", ms(pct(d, 10)), ms(pct(d, 50)), ms(pct(d, 90)), ms(pct(d, 100)))
}
