package engine

import (
	"context"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	"github.com/latchkey/latchkey/libs/telemetry"
)

// metrics are the runner's domain metrics (docs/operations.md lists them), labelled
// by the runner's pool, never by a run or session.
type metrics struct {
	tasks    metric.Int64Counter
	inFlight metric.Int64UpDownCounter
	pool     metric.MeasurementOption
}

// newMetrics registers the runner's instruments on deps.Meter; the gauges read the
// runner's warm set and browser pool when scraped.
func (r *Runner) newMetrics(mp metric.MeterProvider) error {
	m := telemetry.Meter(mp, "github.com/latchkey/latchkey/libs/runner")
	x := &metrics{pool: metric.WithAttributes(attribute.String("pool", r.cfg.Pool))}
	var err error
	if x.tasks, err = m.Int64Counter("latchkey.runner.tasks", metric.WithUnit("{task}"),
		metric.WithDescription("Tasks a runner ran, by kind, status and whether a warm browser context served them")); err != nil {
		return err
	}
	if x.inFlight, err = m.Int64UpDownCounter("latchkey.runner.tasks_in_flight", metric.WithUnit("{task}"),
		metric.WithDescription("Tasks running now")); err != nil {
		return err
	}
	warm, err := m.Int64ObservableGauge("latchkey.runner.warm_contexts", metric.WithUnit("{context}"),
		metric.WithDescription("Idle browser tabs kept warm for their sessions"))
	if err != nil {
		return err
	}
	browsers, err := m.Int64ObservableGauge("latchkey.runner.browsers", metric.WithUnit("{browser}"),
		metric.WithDescription("Chromium processes running"))
	if err != nil {
		return err
	}
	if _, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if r.warmSet != nil {
			o.ObserveInt64(warm, int64(r.warmSet.Len()), x.pool)
		}
		if r.pool != nil {
			o.ObserveInt64(browsers, int64(len(r.pool.PIDs())), x.pool)
		}
		return nil
	}, warm, browsers); err != nil {
		return err
	}
	r.metrics = x
	return nil
}

// taskStarted and taskEnded count a task.
func (x *metrics) taskStarted(ctx context.Context) { x.inFlight.Add(ctx, 1, x.pool) }

func (x *metrics) taskEnded(ctx context.Context, task *runnerv1.RunnerTask, res *runnerv1.TaskResult) {
	x.inFlight.Add(ctx, -1, x.pool)
	x.tasks.Add(ctx, 1, x.pool, metric.WithAttributes(
		attribute.String("kind", strings.TrimPrefix(task.GetKind().String(), "TASK_KIND_")),
		attribute.String("status", strings.TrimPrefix(res.GetStatus().String(), "TASK_STATUS_")),
		attribute.String("warm", strconv.FormatBool(res.GetWarmContext()))))
}
