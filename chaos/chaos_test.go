//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/domain"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/testkit"
)

// TestFiveHundredRunsWhileServicesDie submits 500 Runs, 16 at a time, half by gRPC and
// half on the NATS intake. Early on the portal logs every session out, so one login
// has to happen; then one after the other a scheduler, a runner, the registry, the
// vault and the NATS node holding the task stream are killed with SIGKILL and
// restarted a few seconds later. Every Run must succeed, with that one login, each
// Run's API reaching the site once (per attempt the Run records), one Run per
// submission, and no Run left behind.
//
// The faults are placed by progress (after so many Runs ended), not by the clock, so
// on any machine they fall inside the load.
func TestFiveHundredRunsWhileServicesDie(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	w.wantReplicas(t, 3)
	const n = 500
	before := w.mustCounters(t)
	l := w.startLoad("burst", n, 16)

	faults := []struct {
		at   int // Runs ended before the fault
		name string
		do   func() error
	}{
		{n * 5 / 100, "expire the portal's sessions", func() error {
			// With no Run in flight: a Run whose check passed just before the site
			// logged it out meets the login page in its API and fails, which is the
			// site's doing (the check cannot see the future), not a platform fault.
			// The Runs started after it all find the session logged out at once.
			l.drain(t)
			defer l.resume()
			return w.expireAndWaitLogin(ctx, before.Logins+1, l.resume)
		}},
		{n * 15 / 100, "kill scheduler-1", func() error { return w.restart(ctx, w.scheds[0]) }},
		{n * 25 / 100, "kill runner-1", func() error { return w.restart(ctx, w.runners[0]) }},
		{n * 35 / 100, "kill the registry", func() error { return w.restart(ctx, w.registry) }},
		{n * 45 / 100, "kill the vault", func() error { return w.restart(ctx, w.vault) }},
		{n * 55 / 100, "kill the NATS node holding LK_TASKS", func() error {
			node, err := w.streamNode(ctx, bus.StreamTasks)
			if err != nil {
				return err
			}
			return w.restart(ctx, node)
		}},
	}
	for _, f := range faults {
		if !l.waitEnded(t, f.at) {
			t.Errorf("the load ended before %q: the fault did not fall inside it (make the load longer)", f.name)
			break
		}
		w.note("%d Runs ended: %s", l.ended.Load(), f.name)
		if err := f.do(); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
	}
	took := l.waitAll(t)
	w.check(t, l, before, 1, took)
}

// TestRunsGoOnWithRedisKilledForGood kills Redis during a load and never starts it
// again: Redis only holds caches (DESIGN.md section 5), so every Run still succeeds,
// including the login that the portal's expiry forces after Redis is gone (login
// budgets live in Redis too).
func TestRunsGoOnWithRedisKilledForGood(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	const n = 60
	before := w.mustCounters(t)
	l := w.startLoad("redis", n, 8)
	if !l.waitEnded(t, 10) {
		t.Fatal("the load ended before Redis was killed")
	}
	w.redis.Stop()
	w.note("%d Runs ended: SIGKILL redis-server, for good", l.ended.Load())
	if !l.waitEnded(t, 25) {
		t.Fatal("the load ended before the portal's sessions were expired")
	}
	w.note("%d Runs ended: expire the portal's sessions", l.ended.Load())
	l.drain(t) // as in TestFiveHundredRunsWhileServicesDie
	err := w.expireAndWaitLogin(ctx, before.Logins+1, l.resume)
	l.resume()
	if err != nil {
		t.Fatal(err)
	}
	took := l.waitAll(t)
	w.check(t, l, before, 1, took)
}

// TestRunnerChromiumKilledTasksAreRedelivered kills the Chromium processes of the
// busier runner while its tasks are inside the browser (the portal holds every request
// for a moment): the runner stays up, its tasks are taken again, and every Run
// succeeds.
func TestRunnerChromiumKilledTasksAreRedelivered(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	const n = 60
	before := w.mustCounters(t)
	l := w.startLoad("chromium", n, 8)
	if !l.waitEnded(t, 15) {
		t.Fatal("the load ended before Chromium was killed")
	}
	// Hold every request at the portal so the runners' contexts are busy in the browser.
	held := w.mustCounters(t).Requests
	if err := w.setFault(ctx, `{"delay":"1s"}`); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, stall, func() (bool, string) {
		c, err := w.counters(ctx)
		return err == nil && c.Requests > held+2, fmt.Sprintf("waiting for requests held at the portal: %+v %v", c, err)
	})
	var victim *proc
	var pids []int
	for _, r := range w.runners {
		ps, err := descendants(r.pid(), "chrom")
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) > len(pids) {
			victim, pids = r, ps
		}
	}
	if victim == nil {
		t.Fatal("no runner has Chromium processes")
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	w.note("%d Runs ended: SIGKILL %d Chromium processes of %s (pid %d): %v", l.ended.Load(), len(pids), victim.name, victim.pid(), pids)
	if err := w.setFault(ctx, `{}`); err != nil {
		t.Fatal(err)
	}
	took := l.waitAll(t)
	// The runner itself stayed up (world.report fails the test otherwise) and took
	// work again with a new Chromium.
	if ps, _ := descendants(victim.pid(), "chrom"); len(ps) == 0 {
		t.Errorf("%s has no Chromium after the load: it did not start a new one", victim.name)
	}
	w.check(t, l, before, 0, took)
}

// expireAndWaitLogin logs every session out at the portal, calls then, and waits until
// the portal has seen logins logins and the session is READY again.
func (w *world) expireAndWaitLogin(ctx context.Context, logins int64, then func()) error {
	if err := w.expireSessions(ctx); err != nil {
		return err
	}
	w.note("the portal expired every session")
	then()
	began := time.Now()
	deadline := time.Now().Add(stall)
	for {
		c, err := w.counters(ctx)
		if err == nil && c.Logins >= logins {
			s, err := w.sessions.GetAuthSession(ctx, &latchkeyv1.GetAuthSessionRequest{AuthSessionId: w.session})
			if err == nil && s.GetAuthSession().GetState() == latchkeyv1.SessionState_SESSION_STATE_READY {
				w.note("logged in again (%d logins at the portal), session READY after %s", c.Logins, time.Since(began).Round(time.Millisecond))
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no login within %s of the expiry (counters %+v, error %v)", stall, c, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (w *world) setFault(ctx context.Context, fault string) error {
	return w.post(ctx, "/__admin/fault", fault)
}

func (w *world) mustCounters(t *testing.T) portal.Counters {
	t.Helper()
	c, err := w.counters(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// check asserts what users must see after a load: every Run SUCCEEDED, the portal saw
// extraLogins logins beyond those before it, no Run's API reached the site twice, and
// no Run of the project is left unfinished. It prints the counts either way.
func (w *world) check(t *testing.T, l *load, before portal.Counters, extraLogins int64, took time.Duration) {
	t.Helper()
	ctx := t.Context()
	after := w.mustCounters(t)
	tl := l.tally(after.RequestsByTag)
	logins := after.Logins - before.Logins
	stuck := w.unfinished(t)
	dups, started := w.duplicates(t, l)
	summary := fmt.Sprintf("chaos %s: %s; Runs started %d for %d submissions; logins %d (want %d); unfinished Runs %d; took %s",
		t.Name(), tl, started, tl.runs, logins, extraLogins, len(stuck), took.Round(time.Millisecond))
	streams := fmt.Sprintf("chaos %s: stream replicas and leaders: %s", t.Name(), w.replicas(ctx))
	t.Log(summary)
	t.Log(streams)
	fmt.Println(summary)
	fmt.Println(streams)

	for i, f := range tl.failures {
		if i == 25 {
			t.Errorf("... and %d more Runs did not succeed", len(tl.failures)-i)
			break
		}
		t.Errorf("did not succeed: %s", f)
	}
	for _, g := range tl.gaveUp {
		t.Errorf("client gave up: %s", g)
	}
	if logins != extraLogins {
		t.Errorf("the portal saw %d logins during the load, want exactly %d", logins, extraLogins)
	}
	for _, s := range tl.twice {
		t.Errorf("API executed twice: %s", s)
	}
	if len(tl.unvisited) > 0 {
		t.Errorf("%d Runs SUCCEEDED without their API reaching the portal: %v", len(tl.unvisited), tl.unvisited)
	}
	for _, s := range stuck {
		t.Errorf("left unfinished: %s", s)
	}
	for _, d := range dups {
		t.Errorf("one submission, several Runs: %s", d)
	}
}

// unfinished lists the project's Runs (API and session Runs) that have not ended,
// once every Run of the load has: none may be left behind. A session Run ends with
// its API Run, so it gets a moment to catch up.
func (w *world) unfinished(t *testing.T) []string {
	t.Helper()
	open := []latchkeyv1.RunState{
		latchkeyv1.RunState_RUN_STATE_QUEUED, latchkeyv1.RunState_RUN_STATE_RUNNING,
		latchkeyv1.RunState_RUN_STATE_REQUESTED_MORE_INFO,
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var out []string
		runs, err := w.listRuns(t.Context(), &latchkeyv1.ListRunsRequest{States: open})
		if err != nil {
			out = append(out, err.Error())
		}
		for _, r := range runs {
			if !domain.RunEnded(r.GetState()) {
				out = append(out, fmt.Sprintf("%s %s %s (parent %q) created %s", r.GetId(), r.GetKind(), r.GetState(),
					r.GetParentRunId(), r.GetCreateTime().AsTime().Format("15:04:05.000")))
			}
		}
		if len(out) == 0 || time.Now().After(deadline) {
			return out
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// duplicates lists the submissions that started more than one Run (a retried StartRun
// or publish whose idempotency did not hold), by the tag each Run carries.
func (w *world) duplicates(t *testing.T, l *load) ([]string, int) {
	t.Helper()
	runs, err := w.listRuns(t.Context(), &latchkeyv1.ListRunsRequest{Api: tagged, Kinds: []latchkeyv1.RunKind{latchkeyv1.RunKind_RUN_KIND_API}})
	if err != nil {
		return []string{err.Error()}, 0
	}
	byTag := map[string][]string{}
	for _, r := range runs {
		tag := r.GetParams().GetFields()["tag"].GetStringValue()
		byTag[tag] = append(byTag[tag], r.GetId())
	}
	var out []string
	n := 0
	for _, s := range l.subs {
		n += len(byTag[s.key])
		if ids := byTag[s.key]; len(ids) > 1 {
			out = append(out, fmt.Sprintf("%s (%s) started %d Runs: %v", s.key, s.via, len(ids), ids))
		}
	}
	return out, n
}

// listRuns reads every page of req.
func (w *world) listRuns(ctx context.Context, req *latchkeyv1.ListRunsRequest) ([]*latchkeyv1.Run, error) {
	req = proto.CloneOf(req)
	req.PageSize = 100
	var all []*latchkeyv1.Run
	for {
		resp, err := w.runs.ListRuns(ctx, req)
		if err != nil {
			return all, fmt.Errorf("ListRuns: %w", err)
		}
		all = append(all, resp.GetRuns()...)
		if req.PageToken = resp.GetPageInfo().GetNextPageToken(); req.PageToken == "" {
			return all, nil
		}
	}
}

// TestARunWaitsOutAVaultOrRegistryOutage: a task that needs the vault or the registry
// while it is down (the runner cannot open or read the session's state) is a platform
// fault: the Run is sent again after back-offs until the service is back, SUCCEEDS,
// and records the platform retries — with retries: 0, so no user retry hides it. The
// runners are restarted first, so no warm context spares the task its restore.
func TestARunWaitsOutAVaultOrRegistryOutage(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	for _, victim := range []*proc{w.vault, w.registry} {
		t.Run(victim.name, func(t *testing.T) {
			for _, r := range w.runners {
				if err := r.kill(); err != nil {
					t.Fatal(err)
				}
			}
			tag := "outage-" + victim.name
			resp, err := w.runs.StartRun(ctx, &latchkeyv1.StartRunRequest{
				Api: tagged, AuthSessionId: w.session, IdempotencyKey: tag,
				Params: &structpb.Struct{Fields: map[string]*structpb.Value{"tag": structpb.NewStringValue(tag)}},
			})
			if err != nil {
				t.Fatalf("StartRun: %v", err)
			}
			if err := victim.kill(); err != nil {
				t.Fatal(err)
			}
			w.note("SIGKILL both runners and %s; run %s queued", victim.name, resp.GetRun().GetId())
			for _, r := range w.runners {
				if err := r.start(); err != nil {
					t.Fatal(err)
				}
				if err := r.waitHealthy(ctx, startTimeout); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(2 * restartDelay) // the outage, with the runners taking the task
			if err := victim.start(); err != nil {
				t.Fatal(err)
			}
			if err := victim.waitHealthy(ctx, startTimeout); err != nil {
				t.Fatal(err)
			}
			w.note("%s restarted", victim.name)
			var run *latchkeyv1.Run
			testkit.Eventually(t, stall, func() (bool, string) {
				r, err := w.runs.GetRun(ctx, &latchkeyv1.GetRunRequest{RunId: resp.GetRun().GetId()})
				if err != nil {
					return false, err.Error()
				}
				run = r.GetRun()
				return domain.RunEnded(run.GetState()), "the Run is " + run.GetState().String()
			})
			if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED || run.GetPlatformRetries() < 1 || run.GetAttempt() != 1 {
				t.Fatalf("Run after the %s outage: %s %s %q, attempt %d, platform retries %d; want SUCCEEDED on attempt 1 with the platform retries recorded",
					victim.name, run.GetState(), run.GetFailureReason(), run.GetFailureMessage(), run.GetAttempt(), run.GetPlatformRetries())
			}
			t.Logf("the Run succeeded after the %s outage with %d platform retries", victim.name, run.GetPlatformRetries())
		})
	}
}

// wantReplicas checks that every stream — the KV buckets' and object stores' too — has
// n copies in the cluster, each current: what LATCHKEY_NATS_REPLICAS asked for.
func (w *world) wantReplicas(t *testing.T, n int) {
	t.Helper()
	names := w.js.StreamNames(t.Context())
	count := 0
	for name := range names.Name() {
		s, err := w.js.Stream(t.Context(), name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info := s.CachedInfo()
		current := 1 // the leader
		for _, p := range info.Cluster.Replicas {
			if p.Current {
				current++
			}
		}
		if info.Config.Replicas != n || current != n {
			t.Errorf("stream %s: %d replicas configured, %d current; want %d", name, info.Config.Replicas, current, n)
		}
		count++
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	if count == 0 {
		t.Fatal("no streams")
	}
	w.note("%d streams and buckets, each with %d current replicas", count, n)
}
