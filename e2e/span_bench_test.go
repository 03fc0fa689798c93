package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/telemetry"
	"github.com/latchkey/latchkey/libs/testkit"
)

// BenchmarkWarmRunSpans says where a warm Run's time goes (run it with -v: go test
// -run '^$' -bench BenchmarkWarmRunSpans -benchtime 1x -v ./e2e/, or the table is cut
// to its first lines): 40 list-invoices Runs one
// after another on a READY session, traced into a real Jaeger, and every span name's
// count, mean, p50 and p90 across them, the largest total first. It is the breakdown
// BenchmarkWarmRunsVsBareLoop's ratio needs (tracing export costs a little itself).
func BenchmarkWarmRunSpans(b *testing.B) {
	j := testkit.Jaeger(b)
	w := newWorld(b, stacktest.Options{Args: []string{"-log-level", "warn"}, Env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": j.OTLP}})
	sess := w.readySession(b)
	for range 5 { // warm contexts, caches and connections
		w.wait(b, w.start(b, "list-invoices", sess.GetId(), nil).GetId())
	}
	var traces []string
	for range max(b.N, 40) {
		run := w.wait(b, w.start(b, "list-invoices", sess.GetId(), nil).GetId())
		if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			b.Fatalf("run %s: %s", run.GetState(), run.GetFailureMessage())
		}
		traces = append(traces, run.GetTraceId())
	}
	spans := map[string][]time.Duration{}
	for _, id := range traces {
		var got []telemetry.Span
		// Spans reach Jaeger in batches a few seconds after they end.
		eventuallyWith(b, 30*time.Second, func() (bool, string) {
			var err error
			got, err = telemetry.FetchTrace(b.Context(), j.Query, id)
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
