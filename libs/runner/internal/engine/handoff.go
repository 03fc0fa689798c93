package engine

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/bus"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
)

// Session affinity across runners. A runner that holds a session's idle warm context
// listens, in a queue group, on lk.runner.<pool>.warm.<session digest>. A runner that
// takes a task of a session it holds no context for first offers the task there: the
// holder, if it has a free slot, accepts, runs the task in its warm context, publishes
// the result and reports back, while the taker keeps the JetStream message in progress
// and acks it at the end. Nobody listening, a busy holder, or a holder that goes quiet
// for handoffSilence, and the taker runs the task itself: a dead runner never strands
// work, and nobody waits long for a warm context.
const (
	handoffAccept  = 150 * time.Millisecond
	handoffBeat    = time.Second
	handoffSilence = 3 * time.Second
)

// Replies of a holder to an offered task.
const (
	replyAccepted = "accepted"
	replyBusy     = "busy"
	replyBeat     = "beat"
	replyDone     = "done"
	replyFailed   = "failed"
)

// advertise starts or stops listening for a session's tasks as its idle warm context
// comes and goes.
func (r *Runner) advertise(session string, idle bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nc == nil || r.stopping {
		return
	}
	sub := r.offers[session]
	switch {
	case idle && sub == nil:
		s, err := r.nc.QueueSubscribe(bus.WarmSubject(r.cfg.Pool, session), "holders", r.onOffer)
		if err != nil {
			r.log.Warn("listening for a warm session's tasks failed", "error", err)
			return
		}
		r.offers[session] = s
	case !idle && sub != nil:
		_ = sub.Unsubscribe()
		delete(r.offers, session)
	}
}

// offer hands task to the runner holding its session's warm context and reports
// whether that runner ran it to the end (handed), or took it and then went quiet or
// could not publish its result (lost): it may have run the API, so running the task
// here is a platform retry the Run must record.
func (r *Runner) offer(ctx context.Context, task *runnerv1.RunnerTask, data []byte) (handed, lost bool) {
	sessionID := task.GetSession().GetAuthSessionId()
	if r.nc == nil || sessionID == "" || task.GetFreshContext() || task.GetKind() == runnerv1.TaskKind_TASK_KIND_CREATE ||
		len(task.GetCandidateStateCiphertext()) > 0 {
		return false, false
	}
	session := task.GetProjectId() + "/" + sessionID
	if r.warmSet.Has(session) {
		return false, false
	}
	inbox := r.nc.NewInbox()
	replies, err := r.nc.SubscribeSync(inbox)
	if err != nil {
		return false, false
	}
	defer func() { _ = replies.Unsubscribe() }()
	msg := bus.NewMsg(ctx, r.prop, bus.WarmSubject(r.cfg.Pool, session), data, "")
	msg.Reply = inbox
	if err := r.nc.PublishMsg(msg); err != nil {
		return false, false
	}
	first, err := replies.NextMsg(handoffAccept)
	if err != nil || string(first.Data) != replyAccepted {
		return false, false
	}
	r.log.DebugContext(ctx, "a runner holding the session's warm context took the task", "task_id", task.GetTaskId())
	for {
		m, err := replies.NextMsg(handoffSilence)
		if err != nil {
			r.log.WarnContext(ctx, "the runner that took a task went quiet; running it here", "task_id", task.GetTaskId())
			return false, true
		}
		switch string(m.Data) {
		case replyDone:
			return true, false
		case replyFailed:
			return false, true
		}
	}
}

// onOffer takes a task offered for a session whose idle warm context this runner
// holds, when a slot is free.
func (r *Runner) onOffer(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	var task runnerv1.RunnerTask
	if err := proto.Unmarshal(m.Data, &task); err != nil {
		return
	}
	select {
	case r.slots <- struct{}{}:
	default:
		_ = m.Respond([]byte(replyBusy))
		return
	}
	r.mu.Lock()
	taskCtx := r.taskCtx
	r.mu.Unlock()
	if taskCtx == nil || taskCtx.Err() != nil || !r.warmSet.Has(task.GetProjectId()+"/"+task.GetSession().GetAuthSessionId()) {
		<-r.slots
		_ = m.Respond([]byte(replyBusy))
		return
	}
	_ = m.Respond([]byte(replyAccepted))
	r.loops.Go(func() {
		defer func() { <-r.slots }()
		ctx, span := bus.StartConsumerSpan(taskCtx, r.tracer, r.prop, bus.CoreMsg(m), "runner task (handed over)")
		defer span.End()
		span.SetAttributes(attribute.String("latchkey.task_id", task.GetTaskId()), attribute.String("latchkey.run_id", task.GetRunId()))
		stopBeat := every(handoffBeat, func() { _ = r.nc.Publish(m.Reply, []byte(replyBeat)) })
		interim := func(ictx context.Context, res *runnerv1.TaskResult) error {
			return r.publish(ictx, res, task.GetTaskId()+"-h"+askSuffix(ictx))
		}
		res := r.execute(ctx, &task, interim)
		stopBeat()
		reply := replyDone
		if err := r.publish(ctx, res, task.GetTaskId()+"-result"); err != nil {
			reply = replyFailed
		}
		_ = r.nc.Publish(m.Reply, []byte(reply))
	})
}
