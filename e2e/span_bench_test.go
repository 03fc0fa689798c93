package e2e

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/telemetry"
	"github.com/latchkey/latchkey/libs/testkit"
)

// BenchmarkWarmRunSpans says where a warm Run's time goes (run it with -v: go test
// -run '^$' -bench BenchmarkWarmRunSpans -benchtime 1x -v ./e2e/, or the table is cut
// to its first lines): 40 list-invoices Runs on a READY session, one at a time and
// then two at a time, traced into a real Jaeger, and every span name's count, mean,
// p50 and p90 across them, the largest total first, with the hand-offs between
// services. It is the breakdown
// BenchmarkWarmRunsVsBareLoop's ratio needs (tracing export costs a little itself).
func BenchmarkWarmRunSpans(b *testing.B) {
	j := testkit.Jaeger(b)
	w := newWorld(b, stacktest.Options{Args: []string{"-log-level", "warn"}, Env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": j.OTLP}})
	sess := w.readySession(b)
	for _, conc := range []int{1, 2} {
		b.Run(fmt.Sprintf("c=%d", conc), func(b *testing.B) { warmRunSpans(b, w, j.Query, sess.GetId(), conc) })
	}
}

// warmRunSpans traces 40 warm Runs, conc at a time, and prints their spans.
func warmRunSpans(b *testing.B, w *world, jaeger, session string, conc int) {
	w.startConcurrently(b, 2*conc, conc, "list-invoices", session) // warm contexts, caches and connections
	var mu sync.Mutex
	var traces []string
	inParallel(max(b.N, 40), conc, func(int) {
		run, err := w.startAndWatch(b.Context(), "list-invoices", session)
		if err != nil || run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			b.Errorf("run %s (%v): %s", run.GetState(), err, run.GetFailureMessage())
			return
		}
		mu.Lock()
		traces = append(traces, run.GetTraceId())
		mu.Unlock()
	})
	spans := map[string][]time.Duration{}
	for _, id := range traces {
		var got []telemetry.Span
		// Spans reach Jaeger in batches a few seconds after they end.
		eventuallyWith(b, 30*time.Second, func() (bool, string) {
			var err error
			got, err = telemetry.FetchTrace(b.Context(), jaeger, id)
			return err == nil && has(got, "browser-runner", "capture state") && has(got, "scheduler", "task result"), fmt.Sprintf("trace %s: %d spans, %v", id, len(got), err)
		}, func() string { return "" })
		for _, s := range got {
			k := strings.TrimPrefix(s.Service, "latchkey-") + " | " + s.Name
			spans[k] = append(spans[k], s.Duration)
		}
		// The hand-offs between services on the Run's path: what the overhead is made of
		// besides the spans themselves.
		start, _ := find(got, "scheduler", "latchkey.v1.RunService/StartRun")
		task, _ := find(got, "browser-runner", "runner task")
		result, _ := find(got, "scheduler", "task result")
		spans["gap | StartRun end to runner task start"] = append(spans["gap | StartRun end to runner task start"], task.Start.Sub(start.Start.Add(start.Duration)))
		spans["gap | runner task end to scheduler task result start"] = append(spans["gap | runner task end to scheduler task result start"], result.Start.Sub(task.Start.Add(task.Duration)))
	}
	total := func(d []time.Duration) (t time.Duration) {
		for _, x := range d {
			t += x
		}
		return t
	}
	keys := make([]string, 0, len(spans))
	for k := range spans {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y string) int { return int(total(spans[y]) - total(spans[x])) })
	for _, k := range keys {
		d := spans[k]
		b.Logf("%-75s n=%3d mean %6.2f ms p50 %6.2f p90 %6.2f", k, len(d), ms(total(d)/time.Duration(len(d))), ms(pct(d, 50)), ms(pct(d, 90)))
	}
}

// find returns the first span of service (without its "latchkey-" prefix) named name.
func find(spans []telemetry.Span, service, name string) (telemetry.Span, bool) {
	for _, s := range spans {
		if strings.TrimPrefix(s.Service, "latchkey-") == service && s.Name == name {
			return s, true
		}
	}
	return telemetry.Span{}, false
}

// has reports whether spans hold one of service named name.
func has(spans []telemetry.Span, service, name string) bool {
	_, ok := find(spans, service, name)
	return ok
}
