package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	"github.com/latchkey/latchkey/libs/bus"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/chrome"
	"github.com/latchkey/latchkey/libs/testkit"
)

// benchFile is the benchmark's task: the HTTP check (fused, check_first) then the
// dashboard; restore before and capture after are the runner's.
var benchFile = recipe.File{Path: "bench.yaml", Content: []byte(`
apis:
  dashboard:
    steps:
      - goto: "{{ .Vars.baseURL }}/dashboard"
      - waitVisible: "#user-menu"
`)}

// BenchmarkTask compares, side by side on one browser, a task that restores a
// session's state, runs an HTTP check, loads the dashboard and captures the state:
// (a) bare chromedp with a new context per task, (a') bare chromedp reusing one
// context, (b) the runner through JetStream with a fresh context per task, and (b')
// the runner through JetStream on warm contexts. Each iteration is one round in which
// every variant runs one task per worker (c workers at once), so all four see the same
// machine load. It reports tasks/s, p50 and p95 per variant, the ratios b/a and b'/a',
// and the mean PSS of the renderers.
//
//	go test -run '^$' -bench BenchmarkTask -benchtime 30x ./libs/runner/internal/engine/
func BenchmarkTask(b *testing.B) {
	_, base := portaltest.Start(b, portal.Config{})
	for _, conc := range []int{1, 2} {
		b.Run(fmt.Sprintf("c=%d", conc), func(b *testing.B) { sideBySide(b, base, conc) })
	}
}

// variant is one way of running the task, with one func per worker.
type variant struct {
	name string
	fns  []func() error
	lat  []time.Duration
	busy time.Duration
}

func sideBySide(b *testing.B, base string, conc int) {
	login := func() []*latchkeyv1.StorageState {
		states := make([]*latchkeyv1.StorageState, conc)
		for i := range states {
			states[i] = loggedInState(b, base, portal.User{Username: "alice", Password: portal.AlicePassword})
		}
		return states
	}
	bare, reusedStates := login(), login()
	browser := sharedBrowserCtx(b)
	vs := []*variant{{name: "a"}, {name: "a'"}, {name: "b"}, {name: "b'"}}
	for w := range conc {
		vs[0].fns = append(vs[0].fns, func() error { return bareTask(browser, base, &bare[w], nil) })
		tab, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
		b.Cleanup(cancel)
		re := &reused{tab: tab}
		vs[1].fns = append(vs[1].fns, func() error {
			err := bareTask(browser, base, &reusedStates[w], re)
			re.restored = true
			return err
		})
	}
	vs[2].fns = runnerWorkers(b, base, login(), false)
	vs[3].fns = runnerWorkers(b, base, login(), true)
	// One untimed round, so (a') and (b') start warm.
	for _, v := range vs {
		if err := round(v, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		for _, v := range vs {
			if err := round(v, true); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	tps := map[string]float64{}
	for _, v := range vs {
		slices.Sort(v.lat)
		tps[v.name] = float64(len(v.lat)) / v.busy.Seconds()
		b.ReportMetric(tps[v.name], v.name+"-tasks/s")
		b.ReportMetric(float64(v.lat[len(v.lat)/2].Microseconds())/1000, v.name+"-p50-ms")
		b.ReportMetric(float64(v.lat[len(v.lat)*95/100].Microseconds())/1000, v.name+"-p95-ms")
	}
	b.ReportMetric(tps["b"]/tps["a"], "b/a")
	b.ReportMetric(tps["b'"]/tps["a'"], "b'/a'")
	if pss := rendererPSS(sharedPool.PIDs()); pss > 0 {
		b.ReportMetric(pss, "PSS-MiB/renderer")
	}
}

// round runs one task on each of v's workers at once.
func round(v *variant, record bool) error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	start := time.Now()
	for _, fn := range v.fns {
		wg.Go(func() {
			t0 := time.Now()
			err := fn()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", v.name, err))
			}
			if record {
				v.lat = append(v.lat, time.Since(t0))
			}
		})
	}
	wg.Wait()
	if record {
		v.busy += time.Since(start)
	}
	return errors.Join(errs...)
}

type reused struct {
	tab      context.Context
	restored bool
}

// bareTask is the task written directly with chromedp, the lower bound of what a
// runner costs: a new context (or a reused one), cookies through Storage.setCookies,
// localStorage in an intercepted empty document, the check as a fetch from the page,
// the dashboard, and the capture. It opens its contexts on browser's browser.
func bareTask(browser context.Context, base string, state **latchkeyv1.StorageState, re *reused) error {
	st := *state
	var tab context.Context
	if re != nil {
		tab = re.tab
	} else {
		var cancel context.CancelFunc
		tab, cancel = chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
		defer func() { go cancel() }()
	}
	if err := chromedp.Do(tab); err != nil {
		return err
	}
	bcID := chromedp.FromContext(tab).BrowserContextID
	if re == nil || !re.restored {
		paused := chromedp.Events(tab, fetch.RequestPaused)
		go func() {
			for ev, err := range paused {
				if err != nil {
					return
				}
				_, _ = chromedp.Call(tab, fetch.FulfillRequest, fetch.FulfillRequestParams{RequestID: ev.RequestID, ResponseCode: 200, Body: []byte("<!doctype html>")})
			}
		}()
		if _, err := chromedp.Call(tab, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*" + chrome.SyntheticPath}}}); err != nil {
			return err
		}
		if _, err := chromedp.CallBrowser(tab, storage.SetCookies, storage.SetCookiesParams{BrowserContextID: bcID, Cookies: chrome.CookieParams(st.GetCookies())}); err != nil {
			return err
		}
		tok, _ := json.Marshal(st.GetOrigins()[0].GetLocalStorage()[0].GetValue())
		if err := chromedp.Do(tab, chromedp.Navigate(base+chrome.SyntheticPath),
			chromedp.Evaluate[chromedp.Void](`localStorage.setItem("portal_token", `+string(tok)+`)`)); err != nil {
			return err
		}
	}
	status, err := chromedp.Run(tab, chromedp.Evaluate[int](`fetch("/api/me", {credentials: "include"}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || status != 200 {
		return fmt.Errorf("check: %d %v", status, err)
	}
	if err := chromedp.Do(tab, chromedp.Navigate(base+"/dashboard"), chromedp.WaitVisible(chromedp.CSS("#user-menu"))); err != nil {
		return err
	}
	cookies, err := chromedp.CallBrowser(tab, storage.GetCookies, storage.GetCookiesParams{BrowserContextID: bcID})
	if err != nil {
		return err
	}
	items, err := chromedp.Run(tab, chromedp.Evaluate[[][]string](`Object.keys(localStorage).map(k => [k, localStorage.getItem(k)])`))
	if err != nil {
		return err
	}
	// Write back, as a runner's scheduler does: the portal rotates its cookie.
	*state = &latchkeyv1.StorageState{Cookies: chrome.CookiesFromCDP(cookies.Cookies),
		Origins: []*latchkeyv1.OriginStorage{{Origin: base, LocalStorage: chrome.StorageItems(items)}}}
	return nil
}

// sharedBrowserCtx returns a chromedp context on the shared browser, from which the
// bare variants open their own browser contexts.
func sharedBrowserCtx(b *testing.B) context.Context {
	bc, err := sharedPool.NewContext(b.Context(), "", chrome.Pin{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sharedPool.CloseContext(bc) })
	return bc.Tab()
}

// runnerWorkers drives the runner through JetStream as the scheduler does: each
// worker publishes an API task with check_first for its session, waits for the
// result, and writes the captured state back as the session's next revision.
func runnerWorkers(b *testing.B, base string, states []*latchkeyv1.StorageState, warm bool) []func() error {
	_, _, js := testkit.NATS(b)
	be := newTestBackend(b, []recipe.File{benchFile, portalBundle(b)[0]})
	r := newTestRunner(b, Config{Contexts: len(states)}, be, Deps{JS: js})
	if err := r.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	results := resultRouter(b, js)
	var fns []func() error
	for w := range states {
		session := fmt.Sprintf("bench-%d", w)
		be.vars[project+"/"+session] = map[string]string{"baseURL": base}
		rev := int64(1)
		be.putState(b, project, session, rev, states[w])
		fns = append(fns, func() error {
			tk := task(runnerv1.TaskKind_TASK_KIND_API, "dashboard", project, session, rev, nil)
			tk.CheckFirst, tk.FreshContext = true, !warm
			ch := results.expect(tk.GetRunId())
			publishTaskB(b, js, tk)
			var res *runnerv1.TaskResult
			select {
			case res = <-ch:
			case <-time.After(30 * time.Second):
				return fmt.Errorf("no result for %s", tk.GetRunId())
			}
			if res.GetStatus() != statusSucceeded || (warm && rev > 1 && !res.GetWarmContext()) {
				return fmt.Errorf("task %s: %s warm=%v %s", tk.GetTaskId(), res.GetStatus(), res.GetWarmContext(), res.GetFailureMessage())
			}
			if c := res.GetCapturedStateCiphertext(); len(c) > 0 {
				rev++
				be.mu.Lock()
				be.states[project+"/"+session][rev] = c
				be.mu.Unlock()
			}
			return nil
		})
	}
	return fns
}

// rendererPSS is the mean PSS in MiB of the renderer processes of the browsers.
func rendererPSS(browsers []int) float64 {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var total float64
	n := 0
	for _, p := range procs {
		cmd, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(cmd), "--type=renderer") {
			continue
		}
		dir := filepath.Dir(p)
		if !childOf(dir, browsers) {
			continue
		}
		roll, err := os.ReadFile(filepath.Join(dir, "smaps_rollup"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(roll), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				total += kb / 1024
				n++
			}
		}
	}
	if n == 0 {
		return 0
	}
	return total / float64(n)
}

// childOf reports whether the process in dir descends from one of pids.
func childOf(dir string, pids []int) bool {
	for range 5 {
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			return false
		}
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) < 2 {
			return false
		}
		ppid, _ := strconv.Atoi(f[1])
		if slices.Contains(pids, ppid) {
			return true
		}
		dir = filepath.Join("/proc", f[1])
	}
	return false
}

// router hands results to the tasks waiting for them, from one consumer, as a
// scheduler does.
type router struct {
	mu      sync.Mutex
	waiting map[string]chan *runnerv1.TaskResult
}

func (r *router) expect(runID string) chan *runnerv1.TaskResult {
	ch := make(chan *runnerv1.TaskResult, 1)
	r.mu.Lock()
	r.waiting[runID] = ch
	r.mu.Unlock()
	return ch
}

func resultRouter(b *testing.B, js jetstream.JetStream) *router {
	r := &router{waiting: map[string]chan *runnerv1.TaskResult{}}
	cons, err := js.CreateConsumer(b.Context(), bus.StreamResults, jetstream.ConsumerConfig{FilterSubject: bus.SubjectResultsAll, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		_ = msg.Ack()
		var res runnerv1.TaskResult
		if proto.Unmarshal(msg.Data(), &res) != nil {
			return
		}
		r.mu.Lock()
		ch := r.waiting[res.GetRunId()]
		delete(r.waiting, res.GetRunId())
		r.mu.Unlock()
		if ch != nil {
			ch <- &res
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cc.Stop)
	return r
}
