package scheduler

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/telemetry"
)

// metrics are the scheduler's domain metrics (docs/operations.md lists them). Labels
// are bounded: kinds, states, reasons and outcomes, never a run or session id.
type metrics struct {
	runs        metric.Int64Counter
	runDuration metric.Float64Histogram
	queueWait   metric.Float64Histogram
	logins      metric.Int64Counter
	checks      metric.Int64Counter
	recreate    metric.Float64Histogram
	budgets     metric.Int64Counter
	circuits    metric.Int64Counter
	jobEvents   metric.Int64Counter
}

// runBuckets fit Runs from tens of milliseconds (a warm API) to minutes (a login that
// waits for a person).
var runBuckets = []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	m := telemetry.Meter(mp, "github.com/latchkey/latchkey/services/scheduler")
	var err error
	x := &metrics{}
	if x.runs, err = m.Int64Counter("latchkey.runs", metric.WithUnit("{run}"),
		metric.WithDescription("Runs that ended, by kind, final state and failure reason")); err != nil {
		return nil, err
	}
	if x.runDuration, err = m.Float64Histogram("latchkey.run.duration", metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(runBuckets...),
		metric.WithDescription("Time from a Run's creation to its end, by kind")); err != nil {
		return nil, err
	}
	if x.queueWait, err = m.Float64Histogram("latchkey.run.queue_wait", metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(runBuckets...),
		metric.WithDescription("Time from a Run's creation until it started running, by kind")); err != nil {
		return nil, err
	}
	if x.logins, err = m.Int64Counter("latchkey.logins", metric.WithUnit("{login}"),
		metric.WithDescription("Logins (AUTHSESSION_CREATE and UPDATE Runs) that ended, by outcome and failure reason")); err != nil {
		return nil, err
	}
	if x.checks, err = m.Int64Counter("latchkey.checks", metric.WithUnit("{check}"),
		metric.WithDescription("Checks of a session's state answered by a runner, by outcome (VALID, INVALID, INCONCLUSIVE)")); err != nil {
		return nil, err
	}
	if x.recreate, err = m.Float64Histogram("latchkey.session.recreate.duration", metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(runBuckets...),
		metric.WithDescription("Time from a check finding a session logged out (its recreate starting) until the session is READY again, for recreates that succeeded")); err != nil {
		return nil, err
	}
	if x.budgets, err = m.Int64Counter("latchkey.login_budget.exhausted", metric.WithUnit("{login}"),
		metric.WithDescription("Logins refused because the session's or an origin's login budget was spent")); err != nil {
		return nil, err
	}
	if x.circuits, err = m.Int64Counter("latchkey.circuit.opened", metric.WithUnit("{circuit}"),
		metric.WithDescription("Sessions whose circuit opened: repeated login failures within the window stop further logins")); err != nil {
		return nil, err
	}
	if x.jobEvents, err = m.Int64Counter("latchkey.job.events", metric.WithUnit("{event}"),
		metric.WithDescription("Job events by kind (fired, paused, resumed, skipped, completed, succeeded, failed, canceled, ...) and the reason of a pause")); err != nil {
		return nil, err
	}
	// Exported at 0 from the start, so rate() and alerts see them before the first one.
	ctx := context.Background()
	x.budgets.Add(ctx, 0)
	x.circuits.Add(ctx, 0)
	for _, e := range []string{"fired", "paused"} {
		x.jobEvents.Add(ctx, 0, metric.WithAttributes(attribute.String("event", e), attribute.String("reason", "")))
	}
	return x, nil
}

// circuitOpened counts a session's circuit opening.
func (x *metrics) circuitOpened(ctx context.Context) { x.circuits.Add(ctx, 1) }

// jobEvent counts a job event.
func (x *metrics) jobEvent(ctx context.Context, event string, reason latchkeyv1.FailureReason) {
	r := ""
	if reason != latchkeyv1.FailureReason_FAILURE_REASON_UNSPECIFIED {
		r = short(reason.String(), "FAILURE_REASON_")
	}
	x.jobEvents.Add(ctx, 1, metric.WithAttributes(attribute.String("event", event), attribute.String("reason", r)))
}

// runEnded counts a Run that ended, and its login when it was one.
func (x *metrics) runEnded(ctx context.Context, run *latchkeyv1.Run) {
	kind := short(run.GetKind().String(), "RUN_KIND_")
	state := short(run.GetState().String(), "RUN_STATE_")
	reason := ""
	if run.GetFailureReason() != latchkeyv1.FailureReason_FAILURE_REASON_UNSPECIFIED {
		reason = short(run.GetFailureReason().String(), "FAILURE_REASON_")
	}
	x.runs.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", kind), attribute.String("state", state), attribute.String("reason", reason)))
	byKind := metric.WithAttributes(attribute.String("kind", kind))
	if c, e := run.GetCreateTime(), run.GetEndTime(); c != nil && e != nil {
		x.runDuration.Record(ctx, e.AsTime().Sub(c.AsTime()).Seconds(), byKind)
	}
	if c, s := run.GetCreateTime(), run.GetStartTime(); c != nil && s != nil {
		x.queueWait.Record(ctx, s.AsTime().Sub(c.AsTime()).Seconds(), byKind)
	}
	switch run.GetKind() {
	case latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE, latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE:
		outcome := "failed"
		if run.GetState() == latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			outcome = "succeeded"
		}
		x.logins.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", outcome), attribute.String("reason", reason)))
		if run.GetFailureReason() == latchkeyv1.FailureReason_FAILURE_REASON_LOGIN_BUDGET_EXHAUSTED {
			x.budgets.Add(ctx, 1)
		}
		// A create started for an API Run is a recreate: it was created the moment that
		// Run's check found the session logged out, and it ends once the new state is
		// verified and the session READY.
		if run.GetParentRunId() != "" && run.GetState() == latchkeyv1.RunState_RUN_STATE_SUCCEEDED && run.GetCreateTime() != nil && run.GetEndTime() != nil {
			x.recreate.Record(ctx, run.GetEndTime().AsTime().Sub(run.GetCreateTime().AsTime()).Seconds())
		}
	}
}

// result counts the check a task result answers, if it ran one.
func (x *metrics) result(ctx context.Context, res *runnerv1.TaskResult) {
	if o := res.GetCheckOutcome(); o != latchkeyv1.CheckOutcome_CHECK_OUTCOME_UNSPECIFIED {
		x.checks.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", short(o.String(), "CHECK_OUTCOME_"))))
	}
}

func short(name, prefix string) string { return strings.TrimPrefix(name, prefix) }
