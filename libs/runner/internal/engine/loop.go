package engine

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/domain"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
)

// fetchWait is how long one pull waits for a task before it looks again.
const fetchWait = 5 * time.Second

// ConsumerName is the durable pull consumer the runners of a pool share on LK_TASKS.
func ConsumerName(pool string) string { return "runner-" + pool }

// LoginConsumerName is the durable pull consumer the runners of a pool share on the
// pool's login lane.
func LoginConsumerName(pool string) string { return "runner-" + pool + "-login" }

// consumer declares one of the pool's shared consumers on LK_TASKS.
func (r *Runner) consumer(ctx context.Context, name, subject, desc string) (jetstream.Consumer, error) {
	return r.deps.JS.CreateOrUpdateConsumer(ctx, bus.StreamTasks, jetstream.ConsumerConfig{
		Durable:       name,
		Description:   desc,
		FilterSubject: subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       r.cfg.AckWait,
		MaxDeliver:    r.cfg.MaxDeliver,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
}

// startLoop declares the pool's consumers, subscribes to cancellations, resume
// answers and stale states, and starts one worker per concurrent task: Contexts on
// the API lane, LoginContexts more on the login lane.
func (r *Runner) startLoop(ctx, runCtx context.Context) error {
	apiSubject, err := bus.TaskSubject(r.cfg.Pool)
	if err != nil {
		return err
	}
	loginSubject, err := bus.LoginTaskSubject(r.cfg.Pool)
	if err != nil {
		return err
	}
	staleSubject, err := bus.StaleStateSubject(r.cfg.Pool)
	if err != nil {
		return err
	}
	cons, err := r.consumer(ctx, ConsumerName(r.cfg.Pool), apiSubject, "Browser runners of pool "+r.cfg.Pool)
	if err != nil {
		return err
	}
	logins, err := r.consumer(ctx, LoginConsumerName(r.cfg.Pool), loginSubject, "Logins of the browser runners of pool "+r.cfg.Pool)
	if err != nil {
		return err
	}
	nc := r.deps.JS.Conn()
	for subj, fn := range map[string]func(*nats.Msg){
		staleSubject: r.onStale,
		bus.SubjectCancelAll: func(m *nats.Msg) {
			if r.cancelRun(lastToken(m.Subject)) {
				r.log.Info("canceling a task", "run_id", lastToken(m.Subject))
			}
		},
		bus.SubjectResumeAll: func(m *nats.Msg) { r.deliverResume(lastToken(m.Subject), m.Data) },
	} {
		sub, err := nc.Subscribe(subj, fn)
		if err != nil {
			return err
		}
		r.subs = append(r.subs, sub)
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := nc.FlushWithContext(fctx); err != nil {
		return err
	}
	// Tasks run under their own context, which Stop ends only when its deadline
	// passes, so running tasks may finish while no new one is taken.
	taskCtx, abort := context.WithCancel(context.Background())
	r.mu.Lock()
	r.nc, r.taskCtx, r.abortTasks = r.deps.JS.Conn(), taskCtx, abort
	r.mu.Unlock()
	for range r.cfg.Contexts {
		r.loops.Go(func() { r.work(runCtx, taskCtx, cons, r.slots) })
	}
	for range r.cfg.LoginContexts {
		r.loops.Go(func() { r.work(runCtx, taskCtx, logins, r.loginSlots) })
	}
	return nil
}

func lastToken(subject string) string {
	return subject[strings.LastIndexByte(subject, '.')+1:]
}

// work takes one task at a time from cons, holding one of slots while it runs, until
// runCtx ends.
func (r *Runner) work(runCtx, taskCtx context.Context, cons jetstream.Consumer, slots chan struct{}) {
	backoff := 100 * time.Millisecond
	for runCtx.Err() == nil {
		select {
		case slots <- struct{}{}:
		case <-runCtx.Done():
			return
		}
		fctx, cancel := context.WithTimeout(runCtx, fetchWait)
		msg, err := cons.Next(jetstream.FetchContext(fctx))
		cancel()
		if err == nil {
			r.handle(taskCtx, msg)
		}
		<-slots
		switch {
		case err == nil:
			backoff = 100 * time.Millisecond
		case runCtx.Err() != nil:
			return
		case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, jetstream.ErrNoMessages):
		default:
			r.log.Warn("fetching a task failed", "error", err, "retry_in", backoff)
			select {
			case <-runCtx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// handle runs one delivered task: heartbeats while it runs, then its result on
// lk.results.<run> and an ack — or a delayed nak when the result could not be
// published.
func (r *Runner) handle(ctx context.Context, msg jetstream.Msg) {
	ctx, span := bus.StartConsumerSpan(ctx, r.tracer, r.prop, msg, "runner task")
	defer span.End()
	var task runnerv1.RunnerTask
	if err := proto.Unmarshal(msg.Data(), &task); err != nil {
		r.log.ErrorContext(ctx, "dropping a task that does not decode", "subject", msg.Subject(), "error", err)
		span.SetStatus(codes.Error, "bad task")
		_ = msg.Term()
		return
	}
	delivered := uint64(1)
	if meta, err := msg.Metadata(); err == nil {
		delivered = meta.NumDelivered
	}
	span.SetAttributes(attribute.String("latchkey.task_id", task.GetTaskId()), attribute.String("latchkey.run_id", task.GetRunId()),
		attribute.String("latchkey.task_kind", kindName(task.GetKind())), attribute.String("latchkey.api", task.GetApi()),
		attribute.Int64("latchkey.delivery", int64(delivered)))
	if delivered > 1 && r.answered(ctx, &task) {
		// An earlier delivery ran it and its result was taken; only the ack was lost
		// (the runner died right after publishing). Running it again would run the API
		// twice for one attempt.
		r.log.WarnContext(ctx, "dropping a redelivered task its Run no longer waits for", "task_id", task.GetTaskId(), "run_id", task.GetRunId(), "delivery", delivered)
		span.SetAttributes(attribute.Bool("latchkey.already_answered", true))
		_ = msg.Ack()
		return
	}
	stopBeat := r.heartbeat(msg)
	handed, lost := r.offer(ctx, &task, msg.Data())
	if lost {
		// The runner that took it may have run the API: running it here is another
		// delivery, recorded on the Run — unless its result was taken after all.
		delivered++
		if r.answered(ctx, &task) {
			stopBeat()
			_ = msg.Ack()
			return
		}
	}
	if handed {
		stopBeat()
		if err := msg.DoubleAck(ctx); err != nil {
			r.log.WarnContext(ctx, "acking a handed-over task failed", "task_id", task.GetTaskId(), "error", err)
		}
		span.SetAttributes(attribute.Bool("latchkey.handed_over", true))
		return
	}
	interim := func(ictx context.Context, res *runnerv1.TaskResult) error {
		return r.publish(ictx, res, task.GetTaskId()+"-d"+strconv.FormatUint(delivered, 10)+askSuffix(ictx))
	}
	res := r.execute(ctx, &task, interim)
	stopBeat()
	res.Delivery = uint32(delivered)
	span.SetAttributes(attribute.String("latchkey.task_status", res.GetStatus().String()), attribute.Bool("latchkey.warm_context", res.GetWarmContext()))
	if res.GetPlatformFault() {
		// The scheduler sends the task again after a back-off and records it on the Run.
		r.log.WarnContext(ctx, "task failed in the platform; the scheduler will send it again", "task_id", task.GetTaskId(), "run_id", task.GetRunId(), "delivery", delivered)
	}
	if err := r.publish(ctx, res, task.GetTaskId()+"-result"); err != nil {
		r.log.ErrorContext(ctx, "publishing a task result failed; the task will be redelivered", "task_id", task.GetTaskId(), "error", err)
		span.SetStatus(codes.Error, "result not published")
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if err := msg.DoubleAck(ctx); err != nil {
		r.log.WarnContext(ctx, "acking a task failed", "task_id", task.GetTaskId(), "error", err)
	}
}

// heartbeat tells JetStream the task is in progress every third of AckWait.
func (r *Runner) heartbeat(msg jetstream.Msg) func() {
	return every(r.cfg.AckWait/3, func() { _ = msg.InProgress() })
}

// every calls fn every d until the returned stop is called; stop waits for it.
func every(d time.Duration, fn func()) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fn()
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// publish sends a result to lk.results.<run> with the trace context, de-duplicated by
// msgID.
func (r *Runner) publish(ctx context.Context, res *runnerv1.TaskResult, msgID string) error {
	subject, err := bus.ResultSubject(res.GetRunId())
	if err != nil {
		return err
	}
	b, err := proto.Marshal(res)
	if err != nil {
		return err
	}
	ctx, span := bus.StartProducerSpan(ctx, r.tracer, subject, "task result")
	defer span.End()
	span.SetAttributes(attribute.String("latchkey.task_status", res.GetStatus().String()))
	// A result not published sends the task round again, and its API with it: keep
	// trying for a while (a stream electing a new leader after a NATS node died takes
	// a few seconds). The message id makes a second copy of a publish whose answer was
	// lost harmless.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resultPublishFor)
	defer cancel()
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		actx, acancel := context.WithTimeout(pctx, 3*time.Second)
		_, err = r.deps.JS.PublishMsg(actx, bus.NewMsg(ctx, r.prop, subject, b, msgID))
		acancel()
		if err == nil {
			return nil
		}
		r.log.WarnContext(ctx, "publishing a task result failed; trying again", "task_id", res.GetTaskId(), "error", err)
		select {
		case <-pctx.Done():
			span.SetStatus(codes.Error, "publish failed")
			return err
		case <-time.After(wait):
		}
	}
}

// resultPublishFor bounds how long a runner tries to publish one task result.
const resultPublishFor = 15 * time.Second

// answered reports whether the Run of a redelivered task has moved past it: its record
// in LK_RUNS names another task, or the Run has ended. When the record cannot be read
// the task runs (a platform retry recorded on the Run, rather than a lost task).
func (r *Runner) answered(ctx context.Context, task *runnerv1.RunnerTask) bool {
	kv, err := r.deps.JS.KeyValue(ctx, bus.BucketRuns)
	if err != nil {
		return false
	}
	e, err := kv.Get(ctx, bus.RunRecordKey(task.GetProjectId(), task.GetRunId()))
	if err != nil {
		return false
	}
	var rec schedulerv1.RunRecord
	if err := proto.Unmarshal(e.Value(), &rec); err != nil {
		return false
	}
	return rec.GetTaskId() != task.GetTaskId() || domain.RunEnded(rec.GetRun().GetState())
}
