package jobs

import (
	"context"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/bus"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// emit publishes a JobEvent on lk.events.job.<project>.<job>: "created", "updated",
// "deleted", "paused", "resumed", "fired", "skipped", "completed", and the end of a
// firing as "succeeded", "failed" or "canceled" (with the JobRun). Events are for
// watchers and audit; nothing in the scheduler depends on them, so a failed publish
// is logged and not retried.
func (e *Engine) emit(ctx context.Context, job *latchkeyv1.Job, jobRun *latchkeyv1.JobRun, event string, reason latchkeyv1.FailureReason) {
	if e.onEvent != nil {
		e.onEvent(ctx, event, reason)
	}
	subj, err := bus.JobEventSubject(job.GetProjectId(), job.GetId())
	if err != nil {
		return
	}
	b, err := proto.Marshal(&eventsv1.JobEvent{Job: job, JobRun: jobRun, Event: event, Reason: reason, Time: timestamppb.New(e.now())})
	if err != nil {
		return
	}
	if _, err := e.js.PublishMsg(ctx, bus.NewMsg(ctx, e.prop, subj, b, "")); err != nil {
		e.log.WarnContext(ctx, "publishing job event failed", "job_id", job.GetId(), "event", event, "error", err)
	}
}

// jobRunEvent names the event of a JobRun's end.
func jobRunEvent(s latchkeyv1.JobRunState) string {
	switch s {
	case latchkeyv1.JobRunState_JOB_RUN_STATE_SUCCEEDED:
		return "succeeded"
	case latchkeyv1.JobRunState_JOB_RUN_STATE_FAILED:
		return "failed"
	case latchkeyv1.JobRunState_JOB_RUN_STATE_CANCELED:
		return "canceled"
	}
	return "changed"
}
