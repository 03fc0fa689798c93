package jobs

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/domain"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// Create stores a new, validated Job. An ACTIVE Job gets its first fire time; a paused
// one gets none until resumed.
func (e *Engine) Create(ctx context.Context, job *latchkeyv1.Job) (*latchkeyv1.Job, error) {
	sched, err := ParseSchedule(job.GetSchedule())
	if err != nil {
		return nil, err
	}
	now := e.now()
	job.CreateTime, job.UpdateTime = timestamppb.New(now), timestamppb.New(now)
	job.NextFireTime = nil
	if job.GetState() == latchkeyv1.JobState_JOB_STATE_ACTIVE {
		job.NextFireTime = fireTime(sched.First(now))
	}
	if err := e.store.CreateJob(ctx, &schedulerv1.JobRecord{Job: job}); err != nil {
		return nil, err
	}
	e.emit(ctx, job, nil, "created", 0)
	return job, nil
}

func fireTime(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// Update applies apply to the Job. When the schedule changed, an ACTIVE Job's next
// fire time is computed again from now, and a COMPLETED once-Job given a new schedule
// becomes ACTIVE again. The running JobRun, if any, keeps what it copied at firing.
func (e *Engine) Update(ctx context.Context, project, id string, apply func(*latchkeyv1.Job) error) (*latchkeyv1.Job, error) {
	rec, err := e.store.UpdateJob(ctx, project, id, func(r *schedulerv1.JobRecord) error {
		before := proto.CloneOf(r.GetJob().GetSchedule())
		if err := apply(r.Job); err != nil {
			return err
		}
		now := e.now()
		r.Job.UpdateTime = timestamppb.New(now)
		if proto.Equal(before, r.GetJob().GetSchedule()) {
			return nil
		}
		sched, err := ParseSchedule(r.GetJob().GetSchedule())
		if err != nil {
			return err
		}
		if r.GetJob().GetState() == latchkeyv1.JobState_JOB_STATE_COMPLETED {
			r.Job.State = latchkeyv1.JobState_JOB_STATE_ACTIVE
		}
		if r.GetJob().GetState() == latchkeyv1.JobState_JOB_STATE_ACTIVE {
			r.Job.NextFireTime = fireTime(sched.First(now))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.emit(ctx, rec.GetJob(), nil, "updated", 0)
	return rec.GetJob(), nil
}

// Pause stops a Job from firing. reason is UNSPECIFIED when a user pauses it. A Job
// paused already keeps its state; a session expiry still records its reason. The
// running JobRun, if any, goes on (see StopJobRun for the session-expiry case).
func (e *Engine) Pause(ctx context.Context, project, id string, reason latchkeyv1.FailureReason) (*latchkeyv1.Job, error) {
	changed := false
	rec, err := e.store.UpdateJob(ctx, project, id, func(r *schedulerv1.JobRecord) error {
		changed = false
		switch r.GetJob().GetState() {
		case latchkeyv1.JobState_JOB_STATE_COMPLETED:
			return ErrCompleted
		case latchkeyv1.JobState_JOB_STATE_PAUSED:
			if reason == 0 || r.GetJob().GetPauseReason() == reason {
				return errNoChange
			}
		}
		r.Job.State, r.Job.PauseReason, r.Job.NextFireTime = latchkeyv1.JobState_JOB_STATE_PAUSED, reason, nil
		r.Job.UpdateTime = timestamppb.New(e.now())
		changed = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	if changed {
		e.emit(ctx, rec.GetJob(), nil, "paused", reason)
		e.log.InfoContext(ctx, "job paused", "job_id", id, "reason", reason.String())
	}
	return rec.GetJob(), nil
}

// Resume lets a paused Job fire again, with its next fire time computed from now (a
// once-Job whose time has passed fires at once). The caller has checked the session.
func (e *Engine) Resume(ctx context.Context, project, id string) (*latchkeyv1.Job, error) {
	changed := false
	rec, err := e.store.UpdateJob(ctx, project, id, func(r *schedulerv1.JobRecord) error {
		changed = false
		switch r.GetJob().GetState() {
		case latchkeyv1.JobState_JOB_STATE_COMPLETED:
			return ErrCompleted
		case latchkeyv1.JobState_JOB_STATE_ACTIVE:
			return errNoChange
		}
		sched, err := ParseSchedule(r.GetJob().GetSchedule())
		if err != nil {
			return err
		}
		now := e.now()
		next := sched.First(now)
		if sched.Once() && next.Before(now) {
			next = now
		}
		r.Job.State, r.Job.PauseReason, r.Job.NextFireTime = latchkeyv1.JobState_JOB_STATE_ACTIVE, 0, fireTime(next)
		r.Job.UpdateTime = timestamppb.New(now)
		changed = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	if changed {
		e.emit(ctx, rec.GetJob(), nil, "resumed", 0)
	}
	return rec.GetJob(), nil
}

// Trigger fires a Job now, outside its schedule, whatever its state; ErrBusy while a
// JobRun of it has not ended. The caller has checked the session.
func (e *Engine) Trigger(ctx context.Context, project, id string) (*latchkeyv1.JobRun, error) {
	jobRunID := ""
	rec, err := e.store.UpdateJob(ctx, project, id, func(r *schedulerv1.JobRecord) error {
		if a := r.GetActiveJobRunId(); a != "" {
			return &BusyError{JobRunID: a}
		}
		jobRunID = newID("jobrun")
		r.ActiveJobRunId = jobRunID
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.startJobRun(ctx, rec, jobRunID)
	jr, _, err := e.store.GetJobRun(ctx, project, jobRunID)
	if errors.Is(err, ErrJobRunNotFound) {
		// The firing is recorded on the Job but its JobRun could not be written yet:
		// the tick creates it. Answer the firing as it will be, not "not found".
		return &latchkeyv1.JobRun{Id: jobRunID, JobId: id, ProjectId: project, State: latchkeyv1.JobRunState_JOB_RUN_STATE_RUNNING}, nil
	}
	if err != nil {
		return nil, err
	}
	return jr.GetJobRun(), nil
}

// Delete deletes a Job and its JobRuns; the running JobRun's unfinished Runs are
// canceled.
func (e *Engine) Delete(ctx context.Context, project, id string) error {
	rec, _, err := e.store.GetJob(ctx, project, id)
	if err != nil {
		return err
	}
	// The record first: from now on nothing fires or triggers this Job.
	if err := e.store.DeleteJob(ctx, project, id); err != nil {
		return err
	}
	if a := rec.GetActiveJobRunId(); a != "" {
		e.StopJobRun(ctx, project, a, latchkeyv1.FailureReason_FAILURE_REASON_CANCELED_BY_USER, true)
	}
	ids, err := e.store.JobRunIDs(ctx, project, id)
	if err != nil {
		return err
	}
	for _, jr := range ids {
		if err := e.store.DeleteJobRun(ctx, project, id, jr); err != nil {
			return err
		}
	}
	e.emit(ctx, rec.GetJob(), nil, "deleted", 0)
	return nil
}

// StopJobRun lets a JobRun start no further child (they count as canceled) and, with
// cancel, cancels its children that have not ended.
func (e *Engine) StopJobRun(ctx context.Context, project, jobRunID string, reason latchkeyv1.FailureReason, cancel bool) {
	rec, err := e.drive(ctx, project, jobRunID, func(r *schedulerv1.JobRunRecord) bool {
		if r.GetStopReason() != 0 {
			return false
		}
		r.StopReason = reason
		return true
	})
	if err != nil {
		if !errors.Is(err, ErrJobRunNotFound) {
			e.log.WarnContext(ctx, "stopping job run failed", "job_run_id", jobRunID, "error", err)
		}
		return
	}
	if !cancel {
		return
	}
	for _, c := range rec.GetChildren() {
		if domain.RunEnded(c.GetState()) {
			continue
		}
		if err := e.runs.Cancel(ctx, project, c.GetRunId()); err != nil {
			e.log.WarnContext(ctx, "canceling a job's run failed", "run_id", c.GetRunId(), "error", err)
		}
	}
}
