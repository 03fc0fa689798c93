package engine

import (
	"context"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/latchkey/latchkey/libs/bus"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	"github.com/latchkey/latchkey/libs/runner/internal/chrome"
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
	contexts, err := m.Int64ObservableGauge("latchkey.runner.contexts", metric.WithUnit("{context}"),
		metric.WithDescription("Browser contexts open, one per session with state here (busy or warm)"))
	if err != nil {
		return err
	}
	renderers, err := m.Int64ObservableGauge("latchkey.runner.renderer_memory", metric.WithUnit("By"),
		metric.WithDescription("Resident memory of the Chromium renderer processes, where pages run"))
	if err != nil {
		return err
	}
	if _, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if r.warmSet != nil {
			o.ObserveInt64(warm, int64(r.warmSet.Len()), x.pool)
		}
		r.mu.Lock()
		open := len(r.jars)
		r.mu.Unlock()
		o.ObserveInt64(contexts, int64(open), x.pool)
		if r.pool != nil {
			pids := r.pool.PIDs()
			o.ObserveInt64(browsers, int64(len(pids)), x.pool)
			o.ObserveInt64(renderers, chrome.RendererMemory(pids), x.pool)
		}
		return nil
	}, warm, browsers, contexts, renderers); err != nil {
		return err
	}
	if r.deps.JS != nil {
		if err := bus.RegisterConsumerGauges(m, r.deps.JS,
			bus.ConsumerRef{Stream: bus.StreamTasks, Consumer: ConsumerName(r.cfg.Pool)},
			bus.ConsumerRef{Stream: bus.StreamTasks, Consumer: LoginConsumerName(r.cfg.Pool)}); err != nil {
			return err
		}
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
