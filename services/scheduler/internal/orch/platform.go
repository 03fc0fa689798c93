package orch

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/domain"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// Platform faults: a task that failed because Latchkey's own infrastructure did (the
// runner's browser, the registry, the vault or NATS died, restarted or was out of
// reach) is sent again after a back-off, to any runner. The retry is recorded on the
// Run (platform_retries, a "platform_retry" event) and never uses up the Run's own
// retries, create attempts or login budget: only the site or the recipe fails a Run.
// It is bounded by Policy.PlatformRetries; past it the fault is handled as the
// TRANSIENT failure it is.

// platformRetriable reports whether a Run's current step is sent again after a
// platform fault. Proactive refreshes wait for their next round instead, and a
// recording belongs to the person driving it.
func platformRetriable(rec *schedulerv1.RunRecord) bool {
	switch rec.GetRun().GetKind() {
	case latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_VALIDATE, latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_RECORD:
		return false
	}
	s := rec.GetStage()
	return s == schedulerv1.Stage_STAGE_DISPATCHED || s == schedulerv1.Stage_STAGE_VERIFYING
}

// platformFault parks the Run in STAGE_PLATFORM_RETRY and asks for the result to be
// handed back after the back-off, when resumePlatformRetry sends the step again.
// handled is false when the Run has used its platform retries (or its step is not
// retried): the caller handles the result as a TRANSIENT failure, with res's message
// saying so.
func (o *Orchestrator) platformFault(ctx context.Context, rec *schedulerv1.RunRecord, res *runnerv1.TaskResult) (handled bool, _ *runnerv1.TaskResult, _ error) {
	run := rec.GetRun()
	if !platformRetriable(rec) {
		return false, res, nil
	}
	if run.GetPlatformRetries() >= o.Policy.PlatformRetries {
		res = proto.CloneOf(res)
		res.FailureMessage = fmt.Sprintf("Latchkey's own infrastructure kept failing after %d platform retries: %s", run.GetPlatformRetries(), res.GetFailureMessage())
		return false, res, nil
	}
	project, id := run.GetProjectId(), run.GetId()
	delay := jittered(o.Policy.PlatformBackoffBase, o.Policy.PlatformBackoffMax, run.GetPlatformRetries())
	updated, err := o.Store.Update(ctx, project, id, func(r *schedulerv1.RunRecord) error {
		if r.GetTaskId() != res.GetTaskId() || r.GetStage() != rec.GetStage() || domain.RunEnded(r.GetRun().GetState()) {
			return errStale
		}
		r.RetryStage, r.Stage = r.GetStage(), schedulerv1.Stage_STAGE_PLATFORM_RETRY
		r.NotBefore = timestamppb.New(o.now().Add(delay))
		r.Run.PlatformRetries++
		return nil
	})
	if err != nil {
		return true, res, err
	}
	if run.GetKind() == latchkeyv1.RunKind_RUN_KIND_API {
		// The check of this attempt ended with the task; the next dispatch makes another.
		o.finishChild(ctx, project, rec.GetChildRunId(), res.GetCheckOutcome(), "Latchkey's infrastructure failed during the check; the task is sent again")
	}
	o.Log.WarnContext(ctx, "task failed in the platform; sending it again after a back-off", "run_id", id, "task_id", res.GetTaskId(),
		"runner_id", res.GetRunnerId(), "platform_retry", updated.GetRun().GetPlatformRetries(), "delay", delay)
	o.emit(ctx, updated, "platform_retry")
	return true, res, &RetryAfter{Delay: delay}
}

// resumePlatformRetry sends the step of a Run in STAGE_PLATFORM_RETRY again once its
// back-off has passed: the same compare-and-swap from the stage and task, so two
// copies of the result, or the sweep beside it, send it once.
func (o *Orchestrator) resumePlatformRetry(ctx context.Context, rec *schedulerv1.RunRecord) error {
	if wait := rec.GetNotBefore().AsTime().Sub(o.now()); wait > 0 {
		return &RetryAfter{Delay: wait}
	}
	run := rec.GetRun()
	project, id := run.GetProjectId(), run.GetId()
	const from = schedulerv1.Stage_STAGE_PLATFORM_RETRY
	switch {
	case rec.GetRetryStage() == schedulerv1.Stage_STAGE_VERIFYING:
		return o.sendVerify(ctx, rec, from, rec.GetCandidateState(), nil)
	case run.GetKind() == latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE, run.GetKind() == latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE:
		return o.dispatchCreate(ctx, project, id, from)
	default:
		return o.dispatchAPI(ctx, project, id, from, rec.GetTaskId(), resend)
	}
}

// countRedeliveries records on the Run that JetStream delivered its task more than
// once — a runner died or stalled holding it — once per task.
func (o *Orchestrator) countRedeliveries(ctx context.Context, rec *schedulerv1.RunRecord, res *runnerv1.TaskResult) (*schedulerv1.RunRecord, error) {
	if res.GetDelivery() <= 1 || rec.GetRedeliveryCounted() == res.GetTaskId() {
		return rec, nil
	}
	updated, err := o.Store.Update(ctx, rec.GetRun().GetProjectId(), rec.GetRun().GetId(), func(r *schedulerv1.RunRecord) error {
		if r.GetTaskId() != res.GetTaskId() || r.GetRedeliveryCounted() == res.GetTaskId() || domain.RunEnded(r.GetRun().GetState()) {
			return errStale
		}
		r.Run.PlatformRetries += int32(min(res.GetDelivery()-1, 1<<20))
		r.RedeliveryCounted = res.GetTaskId()
		return nil
	})
	if ErrStale(err) {
		return rec, nil
	}
	return updated, err
}

// taskNotSent parks the Run of a task that could not be published (JetStream out of
// reach) for a platform retry, when its step is retried and retries are left; the
// sweep sends it again at not_before, since no result will come back to resume it.
// It reports whether it did.
func (o *Orchestrator) taskNotSent(ctx context.Context, t *runnerv1.RunnerTask, cause error) bool {
	ctx = context.WithoutCancel(ctx)
	var childID string
	updated, err := o.Store.Update(ctx, t.GetProjectId(), t.GetRunId(), func(r *schedulerv1.RunRecord) error {
		if r.GetTaskId() != t.GetTaskId() || !platformRetriable(r) || domain.RunEnded(r.GetRun().GetState()) ||
			r.GetRun().GetPlatformRetries() >= o.Policy.PlatformRetries {
			return errStale
		}
		childID = r.GetChildRunId()
		r.RetryStage, r.Stage = r.GetStage(), schedulerv1.Stage_STAGE_PLATFORM_RETRY
		r.NotBefore = timestamppb.New(o.now().Add(jittered(o.Policy.PlatformBackoffBase, o.Policy.PlatformBackoffMax, r.GetRun().GetPlatformRetries())))
		r.Run.PlatformRetries++
		return nil
	})
	if err != nil {
		return false
	}
	if updated.GetRun().GetKind() == latchkeyv1.RunKind_RUN_KIND_API {
		o.finishChild(ctx, t.GetProjectId(), childID, 0, "the check's task could not be queued; it is sent again")
	}
	o.Log.WarnContext(ctx, "could not queue a task; sending it again after a back-off", "run_id", t.GetRunId(), "task_id", t.GetTaskId(),
		"platform_retry", updated.GetRun().GetPlatformRetries(), "error", cause)
	o.emit(ctx, updated, "platform_retry")
	return true
}
