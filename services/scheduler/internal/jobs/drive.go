package jobs

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/domain"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/services/scheduler/internal/orch"
)

func newID(prefix string) string { return orch.NewID(prefix) }

// startJobRun creates the JobRun a Job record names as active (copying what it runs
// from the Job) and starts its first children. Creating it twice is harmless: the
// second Create finds it and only drives it.
func (e *Engine) startJobRun(ctx context.Context, rec *schedulerv1.JobRecord, jobRunID string) {
	job := rec.GetJob()
	project := job.GetProjectId()
	total := max(len(job.GetPayloads()), 1)
	jr := &schedulerv1.JobRunRecord{
		JobRun: &latchkeyv1.JobRun{
			Id: jobRunID, JobId: job.GetId(), ProjectId: project, State: latchkeyv1.JobRunState_JOB_RUN_STATE_RUNNING,
			RunsTotal: int32(total), StartTime: timestamppb.New(e.now()),
		},
		Api: job.GetApi(), AuthSessionId: job.GetAuthSessionId(), Payloads: job.GetPayloads(),
		RunOptions: job.GetRunOptions(), MaxConcurrency: max(job.GetMaxConcurrency(), 1),
	}
	created, err := e.store.CreateJobRun(ctx, jr)
	if err != nil {
		// The Job names it as active: the next Tick creates it.
		e.log.WarnContext(ctx, "creating job run failed; the next tick retries", "job_id", job.GetId(), "job_run_id", jobRunID, "error", err)
		return
	}
	if created {
		// A DeleteJob that ran between the firing and now would leave this JobRun
		// behind with nobody to list or end it.
		if _, _, err := e.store.GetJob(ctx, project, job.GetId()); errors.Is(err, ErrJobNotFound) {
			_ = e.store.DeleteJobRun(ctx, project, job.GetId(), jobRunID)
			return
		}
		e.emit(ctx, job, jr.GetJobRun(), "fired", 0)
		e.log.InfoContext(ctx, "job fired", "job_id", job.GetId(), "job_run_id", jobRunID, "runs", total)
	}
	if _, err := e.drive(ctx, project, jobRunID, nil); err != nil {
		e.log.WarnContext(ctx, "starting job runs failed; the next tick retries", "job_run_id", jobRunID, "error", err)
	}
}

// drive applies mutate (if any) to a running JobRun, allots free slots (up to
// max_concurrency) to the next payloads, recounts its children and ends it when every
// child has ended; all in one compare-and-swap. Then it starts the allotted children,
// and when this call ended the JobRun, tells its Job.
func (e *Engine) drive(ctx context.Context, project, jobRunID string, mutate func(*schedulerv1.JobRunRecord) bool) (*schedulerv1.JobRunRecord, error) {
	var allotted []int
	ended := false
	rec, wrote, err := e.store.UpdateJobRun(ctx, project, jobRunID, func(r *schedulerv1.JobRunRecord) error {
		allotted, ended = allotted[:0], false
		if JobRunEnded(r.GetJobRun().GetState()) {
			return errNoChange
		}
		changed := mutate != nil && mutate(r)
		total := int(r.GetJobRun().GetRunsTotal())
		if r.GetStopReason() == 0 {
			inflight := 0
			for _, c := range r.GetChildren() {
				if !domain.RunEnded(c.GetState()) {
					inflight++
				}
			}
			for ; inflight < int(r.GetMaxConcurrency()) && len(r.GetChildren()) < total; inflight++ {
				r.Children = append(r.Children, &schedulerv1.JobChild{
					RunId: newID("run"), State: latchkeyv1.RunState_RUN_STATE_QUEUED, AllotTime: timestamppb.New(e.now()),
				})
				allotted = append(allotted, len(r.Children)-1)
				changed = true
			}
		}
		if tally(r) {
			changed = true
		}
		if JobRunEnded(r.GetJobRun().GetState()) {
			ended = true
		}
		if !changed {
			return errNoChange
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !wrote {
		return rec, nil
	}
	for _, i := range allotted {
		e.startChild(ctx, rec, i)
	}
	if ended {
		e.jobRunEnded(ctx, rec)
	}
	return rec, nil
}

// tally recounts a JobRun's children and ends it when nothing is left to run; it
// reports whether anything changed. The end state: SUCCEEDED when every Run
// succeeded, FAILED when any failed, otherwise CANCELED (some were canceled, or never
// started because the firing was stopped).
func tally(r *schedulerv1.JobRunRecord) bool {
	jr := r.GetJobRun()
	var ok, failed, canceled, inflight int32
	for _, c := range r.GetChildren() {
		switch c.GetState() {
		case latchkeyv1.RunState_RUN_STATE_SUCCEEDED:
			ok++
		case latchkeyv1.RunState_RUN_STATE_FAILED:
			failed++
		case latchkeyv1.RunState_RUN_STATE_CANCELED:
			canceled++
		default:
			inflight++
		}
	}
	started := int32(len(r.GetChildren()))
	if r.GetStopReason() != 0 {
		canceled += jr.GetRunsTotal() - started
	}
	changed := jr.RunsSucceeded != ok || jr.RunsFailed != failed || jr.RunsCanceled != canceled
	jr.RunsSucceeded, jr.RunsFailed, jr.RunsCanceled = ok, failed, canceled
	if inflight > 0 || (started < jr.GetRunsTotal() && r.GetStopReason() == 0) {
		return changed
	}
	switch {
	case failed > 0:
		jr.State = latchkeyv1.JobRunState_JOB_RUN_STATE_FAILED
	case canceled > 0:
		jr.State = latchkeyv1.JobRunState_JOB_RUN_STATE_CANCELED
	default:
		jr.State = latchkeyv1.JobRunState_JOB_RUN_STATE_SUCCEEDED
	}
	jr.EndTime = timestamppb.Now()
	return true
}

// payload returns the params of child i: its payload, or an empty object for a Job
// with no payloads.
func payload(r *schedulerv1.JobRunRecord, i int) *structpb.Struct {
	if i < len(r.GetPayloads()) && r.GetPayloads()[i] != nil {
		return r.GetPayloads()[i]
	}
	return &structpb.Struct{}
}

// startChild starts child i of a JobRun through the Run path. A refusal ends the
// child at once; an expired session also stops the firing and pauses the Job. Any
// other error leaves the child allotted, and the reconciliation starts it again.
func (e *Engine) startChild(ctx context.Context, rec *schedulerv1.JobRunRecord, i int) {
	jr := rec.GetJobRun()
	project, child := jr.GetProjectId(), rec.GetChildren()[i]
	// Each child Run is its own trace, as a Run started with StartRun is; ctx may hold
	// the trace of the firing or of the previous child.
	ctx, span := e.tracer.Start(ctx, "job run child", trace.WithNewRoot(), trace.WithAttributes(
		attribute.String("latchkey.project_id", project), attribute.String("latchkey.job_id", jr.GetJobId()),
		attribute.String("latchkey.job_run_id", jr.GetId()), attribute.String("latchkey.run_id", child.GetRunId()),
	))
	defer span.End()
	req := &latchkeyv1.StartRunRequest{
		Api: rec.GetApi(), AuthSessionId: rec.GetAuthSessionId(), Params: payload(rec, i), Options: rec.GetRunOptions(),
	}
	err := e.runs.StartChild(ctx, project, req, child.GetRunId(), jr.GetId())
	switch {
	case err == nil:
		return
	case errors.Is(err, orch.ErrSessionExpired):
		e.log.InfoContext(ctx, "a job's run found its session expired", "job_id", jr.GetJobId(), "run_id", child.GetRunId())
		e.childEnded(ctx, project, jr.GetId(), child.GetRunId(), latchkeyv1.RunState_RUN_STATE_CANCELED, latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED)
		if _, err := e.Pause(ctx, project, jr.GetJobId(), latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED); err != nil && !errors.Is(err, ErrJobNotFound) && !errors.Is(err, ErrCompleted) {
			e.log.WarnContext(ctx, "pausing job failed", "job_id", jr.GetJobId(), "error", err)
		}
	case orch.Refused(err):
		e.log.InfoContext(ctx, "a job's run was refused", "job_id", jr.GetJobId(), "run_id", child.GetRunId(), "error", err)
		e.childEnded(ctx, project, jr.GetId(), child.GetRunId(), latchkeyv1.RunState_RUN_STATE_FAILED, 0)
	default:
		e.log.WarnContext(ctx, "starting a job's run failed; the reconciliation retries", "job_id", jr.GetJobId(), "run_id", child.GetRunId(), "error", err)
	}
}

// childEnded records the end of a child Run and drives its JobRun on; with stop set,
// the JobRun starts no further child.
func (e *Engine) childEnded(ctx context.Context, project, jobRunID, runID string, state latchkeyv1.RunState, stop latchkeyv1.FailureReason) {
	_, err := e.drive(ctx, project, jobRunID, func(r *schedulerv1.JobRunRecord) bool {
		changed := false
		if stop != 0 && r.GetStopReason() == 0 {
			r.StopReason, changed = stop, true
		}
		for _, c := range r.GetChildren() {
			if c.GetRunId() == runID && !domain.RunEnded(c.GetState()) {
				c.State, changed = state, true
			}
		}
		return changed
	})
	if err != nil && !errors.Is(err, ErrJobRunNotFound) {
		e.log.WarnContext(ctx, "recording the end of a job's run failed", "job_run_id", jobRunID, "run_id", runID, "error", err)
	}
}

// RunEnded records the end of a child Run and starts the next; it is the
// orchestrator's RunEnded hook, called for every Run that ends.
func (e *Engine) RunEnded(ctx context.Context, run *latchkeyv1.Run) {
	if run.GetJobRunId() == "" || !domain.RunEnded(run.GetState()) {
		return
	}
	e.childEnded(ctx, run.GetProjectId(), run.GetJobRunId(), run.GetId(), run.GetState(), 0)
}

// jobRunEnded tells the Job its JobRun ended (so it may fire again), publishes the
// end, and deletes the Job's oldest ended JobRuns beyond KeepJobRuns.
func (e *Engine) jobRunEnded(ctx context.Context, rec *schedulerv1.JobRunRecord) {
	jr := rec.GetJobRun()
	project := jr.GetProjectId()
	released := false
	job, err := e.store.UpdateJob(ctx, project, jr.GetJobId(), func(r *schedulerv1.JobRecord) error {
		if released = r.GetActiveJobRunId() == jr.GetId(); !released {
			return errNoChange
		}
		r.ActiveJobRunId = ""
		return nil
	})
	if errors.Is(err, ErrJobNotFound) {
		return
	}
	if err != nil {
		// The reconciliation in Tick clears it later.
		e.log.WarnContext(ctx, "releasing job after its run failed", "job_id", jr.GetJobId(), "error", err)
		return
	}
	if !released {
		return // another replica (or the reconciliation) told the Job already
	}
	e.emit(ctx, job.GetJob(), jr, jobRunEvent(jr.GetState()), rec.GetStopReason())
	e.log.InfoContext(ctx, "job run ended", "job_id", jr.GetJobId(), "job_run_id", jr.GetId(), "state", jr.GetState().String(),
		"succeeded", jr.GetRunsSucceeded(), "failed", jr.GetRunsFailed(), "canceled", jr.GetRunsCanceled())
	e.prune(ctx, project, jr.GetJobId())
}

// prune deletes the ended JobRuns of a Job beyond the newest KeepJobRuns.
func (e *Engine) prune(ctx context.Context, project, job string) {
	ids, err := e.store.JobRunIDs(ctx, project, job)
	if err != nil || len(ids) <= KeepJobRuns {
		return
	}
	for _, id := range ids[KeepJobRuns:] {
		rec, _, err := e.store.GetJobRun(ctx, project, id)
		if err == nil && !JobRunEnded(rec.GetJobRun().GetState()) {
			continue
		}
		if err := e.store.DeleteJobRun(ctx, project, job, id); err != nil {
			e.log.WarnContext(ctx, "deleting an old job run failed", "job_run_id", id, "error", err)
		}
	}
}
