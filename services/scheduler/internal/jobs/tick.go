package jobs

import (
	"context"
	"errors"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/domain"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// Tick fires every due Job and reconciles every running JobRun. It reads all Job
// records (a scan of LK_JOBS keys job.>), which is fine for thousands of Jobs; every
// replica ticks, and the compare-and-swap on the Job record lets one of them fire.
func (e *Engine) Tick(ctx context.Context) error {
	if e.housekeepDue() {
		if err := e.housekeep(ctx, markerAge); err != nil {
			e.log.WarnContext(ctx, "clearing old job run markers failed", "error", err)
		}
	}
	return e.store.AllJobs(ctx, func(rec *schedulerv1.JobRecord, rev uint64) {
		now := e.now()
		if rec.GetActiveJobRunId() != "" && e.reconcile(ctx, rec, now) {
			var err error
			if rec, rev, err = e.store.GetJob(ctx, rec.GetJob().GetProjectId(), rec.GetJob().GetId()); err != nil {
				return
			}
		}
		e.fireIfDue(ctx, rec, rev, now)
	})
}

// fireIfDue fires an ACTIVE Job whose next fire time has passed. The compare-and-swap
// that advances next_fire_time decides which replica fires. While the Job's previous
// JobRun is still running the firing is skipped (next_fire_time still advances), so a
// slow Job never piles up firings; a once-Job instead waits for it to end.
func (e *Engine) fireIfDue(ctx context.Context, rec *schedulerv1.JobRecord, rev uint64, now time.Time) {
	job := rec.GetJob()
	if job.GetState() != latchkeyv1.JobState_JOB_STATE_ACTIVE || job.GetNextFireTime() == nil || job.GetNextFireTime().AsTime().After(now) {
		return
	}
	sched, err := ParseSchedule(job.GetSchedule())
	if err != nil {
		e.log.WarnContext(ctx, "job has a schedule that no longer parses", "job_id", job.GetId(), "error", err)
		return
	}
	busy := rec.GetActiveJobRunId() != ""
	if busy && sched.Once() {
		return
	}
	next := proto.CloneOf(rec)
	jobRunID := ""
	if !busy {
		jobRunID = newID("jobrun")
		next.ActiveJobRunId = jobRunID
	}
	if sched.Once() {
		next.Job.State, next.Job.NextFireTime = latchkeyv1.JobState_JOB_STATE_COMPLETED, nil
	} else {
		next.Job.NextFireTime = fireTime(sched.After(job.GetNextFireTime().AsTime(), now))
	}
	won, err := e.store.CASJob(ctx, next, rev)
	if err != nil {
		e.log.WarnContext(ctx, "firing job failed", "job_id", job.GetId(), "error", err)
		return
	}
	if !won {
		return // another replica fired it, or the Job changed; the next tick looks again
	}
	if busy {
		e.emit(ctx, next.GetJob(), nil, "skipped", 0)
		e.log.InfoContext(ctx, "job firing skipped: its previous run has not ended", "job_id", job.GetId(), "job_run_id", rec.GetActiveJobRunId())
		return
	}
	if sched.Once() {
		e.emit(ctx, next.GetJob(), nil, "completed", 0)
	}
	e.startJobRun(ctx, next, jobRunID)
}

// reconcile repairs a Job's running JobRun when a step of it was lost: the JobRun was
// never created (the firing replica died), it ended but the Job still names it, or it
// has gone unchanged for stuckAfter (a lost run event, a child never started). It
// reports whether it changed the Job record.
func (e *Engine) reconcile(ctx context.Context, rec *schedulerv1.JobRecord, now time.Time) bool {
	project, jobRunID := rec.GetJob().GetProjectId(), rec.GetActiveJobRunId()
	jr, _, err := e.store.GetJobRun(ctx, project, jobRunID)
	switch {
	case errors.Is(err, ErrJobRunNotFound):
		e.startJobRun(ctx, rec, jobRunID)
		return true
	case err != nil:
		return false
	case JobRunEnded(jr.GetJobRun().GetState()):
		e.jobRunEnded(ctx, jr)
		return true
	case now.Sub(jr.GetUpdateTime().AsTime()) < e.stuckAfter:
		return false
	}
	ended := map[string]latchkeyv1.RunState{}
	var restart []string
	for _, c := range jr.GetChildren() {
		if domain.RunEnded(c.GetState()) {
			continue
		}
		state, found, err := e.runs.RunState(ctx, project, c.GetRunId())
		switch {
		case err != nil:
			continue
		case !found && now.Sub(c.GetAllotTime().AsTime()) > e.restartAfter:
			restart = append(restart, c.GetRunId())
		case domain.RunEnded(state):
			ended[c.GetRunId()] = state
		}
	}
	after, err := e.drive(ctx, project, jobRunID, func(r *schedulerv1.JobRunRecord) bool {
		changed := false
		for _, c := range r.GetChildren() {
			if domain.RunEnded(c.GetState()) {
				continue
			}
			if s, ok := ended[c.GetRunId()]; ok {
				c.State, changed = s, true
			} else if r.GetStopReason() != 0 && slices.Contains(restart, c.GetRunId()) {
				// The firing was stopped: a child whose start was lost is not started
				// again, and counts as canceled, so the JobRun can end.
				c.State, changed = latchkeyv1.RunState_RUN_STATE_CANCELED, true
			}
		}
		return changed
	})
	if err != nil {
		e.log.WarnContext(ctx, "reconciling job run failed", "job_run_id", jobRunID, "error", err)
		return false
	}
	for i, c := range after.GetChildren() {
		for _, id := range restart {
			if c.GetRunId() == id && !domain.RunEnded(c.GetState()) && after.GetStopReason() == 0 {
				e.log.InfoContext(ctx, "starting a job's run again: it was allotted but never started", "run_id", id)
				e.startChild(ctx, after, i)
			}
		}
	}
	return JobRunEnded(after.GetJobRun().GetState())
}

// HandleSessionEvent pauses the Jobs of a session that became EXPIRED, or was deleted
// (reason AUTH_SESSION_EXPIRED either way: the Job has no usable session), and stops
// their running JobRuns from starting more Runs; the Runs already running end by
// themselves (the scheduler cancels those waiting on the session). It finds the
// session's Jobs by reading the project's Jobs.
func (e *Engine) HandleSessionEvent(ctx context.Context, ev *eventsv1.SessionEvent) error {
	if ev.GetToState() != latchkeyv1.SessionState_SESSION_STATE_EXPIRED && ev.GetType() != eventsv1.SessionEventType_SESSION_EVENT_TYPE_DELETED {
		return nil
	}
	project, session := ev.GetProjectId(), ev.GetAuthSessionId()
	ids, err := e.store.JobIDs(ctx, project)
	if err != nil {
		return err
	}
	for _, id := range ids {
		rec, _, err := e.store.GetJob(ctx, project, id)
		if err != nil || rec.GetJob().GetAuthSessionId() != session {
			continue
		}
		if _, err := e.Pause(ctx, project, id, latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED); err != nil && !errors.Is(err, ErrCompleted) && !errors.Is(err, ErrJobNotFound) {
			return err
		}
		if a := rec.GetActiveJobRunId(); a != "" {
			e.StopJobRun(ctx, project, a, latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED, false)
		}
	}
	return nil
}

// housekeepDue reports whether this replica should clear old markers now (hourly).
func (e *Engine) housekeepDue() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if now := time.Now(); now.Sub(e.lastHousekeep) >= housekeepEvery {
		e.lastHousekeep = now
		return true
	}
	return false
}
