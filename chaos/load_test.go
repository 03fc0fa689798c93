//go:build chaos

package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/domain"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// The clients' retry policy; doc.go says why.
const (
	startAttemptTimeout   = 10 * time.Second
	publishAttemptTimeout = 5 * time.Second
	backoffFirst          = 100 * time.Millisecond
	backoffMax            = 2 * time.Second
	// submitBudget is how long a client keeps retrying one submission.
	submitBudget = 2 * time.Minute
	// notFoundBudget is how long a Run published on NATS may stay unknown to the
	// schedulers before the client gives up on it (the intake refused it).
	notFoundBudget = 2 * time.Minute
	// watchAttempt bounds one WatchRun stream; the client then watches again.
	watchAttempt = time.Minute
	// stall fails a test when no Run at all has ended for this long: no deadline
	// depends on the machine's speed, but a load that stops is a failure.
	stall = 3 * time.Minute
)

// tagged is the API every Run of the suite runs (chaosBundle).
const tagged = "tagged-invoices"

// sub is one Run the load submits and follows.
type sub struct {
	i   int
	key string // idempotency key and portal tag; on NATS also the message id and Run id
	via string // "grpc" or "nats"

	// Set by the worker that owns the submission; read after the load is done.
	runID    string
	attempts int // StartRun calls or publishes made
	watches  int // WatchRun calls made
	final    *latchkeyv1.Run
	err      error // the client gave up
}

// load submits n Runs, at most concurrency at a time (each worker submits one, watches
// it end, then takes the next), alternating gRPC and the NATS intake.
type load struct {
	w     *world
	start time.Time
	subs  []*sub
	ended atomic.Int64
	done  chan struct{}

	mu      sync.Mutex
	retries map[string]int    // what made clients retry, by kind
	last    time.Time         // when the last Run ended
	active  map[string]string // Runs being watched: run id -> how submitted
	gate    chan struct{}     // closed while workers may take the next Run
	running atomic.Int64      // workers past the gate
}

// startLoad starts the load in the background; wait* follow it from the test.
func (w *world) startLoad(name string, n, concurrency int) *load {
	l := &load{w: w, start: time.Now(), done: make(chan struct{}), retries: map[string]int{}, last: time.Now(), active: map[string]string{}, gate: make(chan struct{})}
	close(l.gate)
	next := make(chan *sub, n)
	for i := range n {
		s := &sub{i: i, key: fmt.Sprintf("%s-%04d", name, i), via: "grpc"}
		if i%2 == 1 {
			s.via = "nats"
		}
		l.subs = append(l.subs, s)
		next <- s
	}
	close(next)
	ctx := w.t.Context()
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for s := range next {
				l.enter()
				l.run(ctx, s)
				l.running.Add(-1)
				l.mu.Lock()
				l.last = time.Now()
				l.mu.Unlock()
				l.ended.Add(1)
			}
		})
	}
	go func() { wg.Wait(); close(l.done) }()
	w.note("load %q: %d Runs, %d at a time, half by gRPC StartRun and half by the NATS intake", name, n, concurrency)
	return l
}

// enter waits until the gate is open and counts the worker as running.
func (l *load) enter() {
	for {
		l.running.Add(1)
		l.mu.Lock()
		gate := l.gate
		l.mu.Unlock()
		select {
		case <-gate:
			return
		default:
		}
		l.running.Add(-1)
		<-gate
	}
}

// drain stops the workers from taking more Runs and waits until every Run in flight
// has ended; resume lets them go on.
func (l *load) drain(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	l.gate = make(chan struct{})
	l.mu.Unlock()
	for l.running.Load() > 0 {
		l.mu.Lock()
		quiet := time.Since(l.last)
		l.mu.Unlock()
		if quiet > stall {
			t.Fatalf("no Run has ended for %s while draining; in flight:\n%s", stall, l.inFlight())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *load) resume() {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.gate: // open already
	default:
		close(l.gate)
	}
}

// run submits s and watches its Run until it ends.
func (l *load) run(ctx context.Context, s *sub) {
	req := &latchkeyv1.StartRunRequest{
		Api: tagged, AuthSessionId: l.w.session, IdempotencyKey: s.key,
		Params: &structpb.Struct{Fields: map[string]*structpb.Value{"tag": structpb.NewStringValue(s.key)}},
	}
	submitted := time.Now()
	if s.via == "grpc" {
		s.err = l.startGRPC(ctx, s, req)
	} else {
		s.err = l.publish(ctx, s, req)
	}
	if s.err != nil {
		return
	}
	l.mu.Lock()
	l.active[s.runID] = s.via
	l.mu.Unlock()
	s.final, s.err = l.watch(ctx, s, submitted)
	l.mu.Lock()
	delete(l.active, s.runID)
	l.mu.Unlock()
}

func (l *load) startGRPC(ctx context.Context, s *sub, req *latchkeyv1.StartRunRequest) error {
	return l.retry(ctx, "StartRun", func(ctx context.Context) (retry bool, err error) {
		actx, cancel := context.WithTimeout(ctx, startAttemptTimeout)
		defer cancel()
		s.attempts++
		resp, err := l.w.runs.StartRun(actx, req)
		if err == nil {
			s.runID = resp.GetRun().GetId()
			return false, nil
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded:
			return ctx.Err() == nil, err
		}
		return false, err
	})
}

func (l *load) publish(ctx context.Context, s *sub, req *latchkeyv1.StartRunRequest) error {
	subject, err := bus.RunRequestSubject(project)
	if err != nil {
		return err
	}
	data, err := proto.Marshal(&latchkeyv1.RunRequest{ApiKey: l.w.apiKey, RunId: s.key, Request: req})
	if err != nil {
		return err
	}
	s.runID = s.key
	return l.retry(ctx, "publish", func(ctx context.Context) (bool, error) {
		actx, cancel := context.WithTimeout(ctx, publishAttemptTimeout)
		defer cancel()
		s.attempts++
		m := nats.NewMsg(subject)
		m.Data = data
		m.Header.Set(bus.HeaderMsgID, s.key)
		_, err := l.w.js.PublishMsg(actx, m)
		return err != nil && ctx.Err() == nil, err
	})
}

// watch follows the Run until it ends, watching again whenever a stream breaks.
func (l *load) watch(ctx context.Context, s *sub, submitted time.Time) (*latchkeyv1.Run, error) {
	wait := backoffFirst
	for {
		run, err := l.watchOnce(ctx, s)
		if run != nil && domain.RunEnded(run.GetState()) {
			return run, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("watching %s: %w", s.runID, ctx.Err())
		}
		code := status.Code(err)
		if err == nil {
			code = codes.OK // the stream ended before the Run did
		}
		if code == codes.NotFound && time.Since(submitted) > notFoundBudget {
			return nil, fmt.Errorf("run %s still unknown %s after it was submitted: %w", s.runID, notFoundBudget, err)
		}
		l.count("WatchRun " + code.String())
		sleep(ctx, &wait)
	}
}

func (l *load) watchOnce(ctx context.Context, s *sub) (*latchkeyv1.Run, error) {
	ctx, cancel := context.WithTimeout(ctx, watchAttempt)
	defer cancel()
	s.watches++
	stream, err := l.w.runs.WatchRun(ctx, &latchkeyv1.WatchRunRequest{RunId: s.runID})
	if err != nil {
		return nil, err
	}
	var last *latchkeyv1.Run
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			return last, nil
		}
		if err != nil {
			return last, err
		}
		last = m.GetRun()
		if domain.RunEnded(last.GetState()) {
			return last, nil
		}
	}
}

// retry calls attempt until it succeeds or says not to retry, backing off between
// attempts, for at most submitBudget.
func (l *load) retry(ctx context.Context, what string, attempt func(context.Context) (bool, error)) error {
	deadline := time.Now().Add(submitBudget)
	wait := backoffFirst
	for {
		again, err := attempt(ctx)
		if err == nil {
			return nil
		}
		if !again {
			return fmt.Errorf("%s: %w", what, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: still failing after %s: %w", what, submitBudget, err)
		}
		l.count(what + " " + retryKind(err))
		sleep(ctx, &wait)
	}
}

// retryKind names an error for the retry counts: its gRPC code, or NATS's words.
func retryKind(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Code().String()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, nats.ErrNoResponders):
		return "no responders"
	}
	return err.Error()
}

func (l *load) count(kind string) {
	l.mu.Lock()
	l.retries[kind]++
	l.mu.Unlock()
}

// sleep waits a full-jitter back-off and doubles the next one, up to backoffMax.
func sleep(ctx context.Context, wait *time.Duration) {
	d := time.Duration(rand.Int64N(int64(*wait)) + 1)
	*wait = min(2**wait, backoffMax)
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// waitEnded waits until at least k Runs have ended, and reports false when the load
// ended first. It fails the test when no Run ends for the stall time.
func (l *load) waitEnded(t *testing.T, k int) bool {
	t.Helper()
	for {
		if int(l.ended.Load()) >= k {
			return true
		}
		select {
		case <-l.done:
			return int(l.ended.Load()) >= k
		case <-t.Context().Done():
			t.Fatalf("the test ended while waiting for %d Runs to end", k)
		case <-time.After(50 * time.Millisecond):
		}
		l.mu.Lock()
		quiet := time.Since(l.last)
		l.mu.Unlock()
		if quiet > stall {
			t.Fatalf("no Run has ended for %s (%d of %d ended); in flight:\n%s", stall, l.ended.Load(), len(l.subs), l.inFlight())
		}
	}
}

// waitAll waits for the whole load, then reads every Run's final record.
func (l *load) waitAll(t *testing.T) time.Duration {
	t.Helper()
	l.waitEnded(t, len(l.subs))
	<-l.done
	took := time.Since(l.start)
	for _, s := range l.subs {
		if s.final == nil {
			continue
		}
		// The watch's last message may be an event; the record is the authority.
		resp, err := l.w.runs.GetRun(t.Context(), &latchkeyv1.GetRunRequest{RunId: s.runID})
		if err != nil {
			t.Errorf("GetRun %s after the load: %v", s.runID, err)
			continue
		}
		s.final = resp.GetRun()
	}
	l.w.note("load ended: %d Runs in %s", len(l.subs), took.Round(time.Millisecond))
	return took
}

// inFlight describes the Runs not ended yet, as the schedulers see them.
func (l *load) inFlight() string {
	l.mu.Lock()
	active := maps.Clone(l.active)
	l.mu.Unlock()
	ids := slices.Sorted(maps.Keys(active))
	var b strings.Builder
	for n, id := range ids {
		if n == 20 {
			fmt.Fprintf(&b, "... and %d more\n", len(ids)-n)
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := l.w.runs.GetRun(ctx, &latchkeyv1.GetRunRequest{RunId: id})
		cancel()
		if err != nil {
			fmt.Fprintf(&b, "%s (%s): GetRun: %v\n", id, active[id], err)
			continue
		}
		r := resp.GetRun()
		fmt.Fprintf(&b, "%s (%s): %s attempt %d children %v\n", id, active[id], r.GetState(), r.GetAttempt(), r.GetChildRunIds())
	}
	return b.String()
}

// tally is what a load ended with.
type tally struct {
	runs, succeeded int
	states          map[string]int // state and reason -> Runs
	failures        []string       // one line per Run that did not succeed
	gaveUp          []string       // submissions or watches the client gave up
	visits          map[int64]int  // visits of the API per Run -> Runs
	twice           []string       // Runs whose API reached the site more often than they record attempts
	unvisited       []string       // SUCCEEDED Runs whose API never reached the site
	submitAttempts  int
	retries         map[string]int
	platformRetries map[int32]int // platform retries per Run -> Runs
}

// tally counts the load's outcome against the portal's per-tag counts.
func (l *load) tally(byTag map[string]int64) tally {
	out := tally{runs: len(l.subs), states: map[string]int{}, visits: map[int64]int{}, retries: l.retries, platformRetries: map[int32]int{}}
	for _, s := range l.subs {
		out.submitAttempts += s.attempts
		visits := byTag[s.key]
		out.visits[visits]++
		if s.err != nil {
			out.gaveUp = append(out.gaveUp, fmt.Sprintf("%s (%s, %d attempts): %v", s.key, s.via, s.attempts, s.err))
			out.states["client gave up"]++
			continue
		}
		r := s.final
		state := strings.TrimPrefix(r.GetState().String(), "RUN_STATE_")
		if r.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			state += " " + strings.TrimPrefix(r.GetFailureReason().String(), "FAILURE_REASON_")
			out.failures = append(out.failures, fmt.Sprintf("%s (%s, run %s, attempt %d, ended %s): %s %s: %s",
				s.key, s.via, r.GetId(), r.GetAttempt(), r.GetEndTime().AsTime().Format("15:04:05.000"),
				r.GetState(), r.GetFailureReason(), r.GetFailureMessage()))
		} else {
			out.succeeded++
			if visits == 0 {
				out.unvisited = append(out.unvisited, s.key)
			}
		}
		out.states[state]++
		out.platformRetries[r.GetPlatformRetries()]++
		// At most once per attempt the Run records: a retry the user can see (an
		// attempt, or a platform retry after a runner died holding the task) may run
		// the API again, a silent redelivery may not.
		if seen := int64(max(1, r.GetAttempt()) + r.GetPlatformRetries()); visits > seen {
			out.twice = append(out.twice, fmt.Sprintf("%s (run %s, %s): the portal saw its API %d times, the Run records %d attempt(s) and %d platform retries",
				s.key, r.GetId(), r.GetState(), visits, r.GetAttempt(), r.GetPlatformRetries()))
		}
	}
	return out
}

// String is the one-line summary the suite prints.
func (t tally) String() string {
	platform := map[int64]int{}
	for k, v := range t.platformRetries {
		platform[int64(k)] = v
	}
	return fmt.Sprintf("%d/%d SUCCEEDED; outcomes %s; API visits per Run %s; platform retries per Run %s; client gave up %d; submissions %d for %d Runs; retries %s",
		t.succeeded, t.runs, counts(t.states), countsInt(t.visits), countsInt(platform), len(t.gaveUp), t.submitAttempts, t.runs, counts(t.retries))
}

func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func countsInt(m map[int64]int) string {
	s := map[string]int{}
	for k, v := range m {
		s[fmt.Sprintf("%d×", k)] = v
	}
	return counts(s)
}
