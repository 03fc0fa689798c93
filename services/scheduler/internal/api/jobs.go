package api

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/errs"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/services/scheduler/internal/jobs"
	"github.com/latchkey/latchkey/services/scheduler/internal/orch"
)

// Jobs implements latchkey.v1.JobService over the jobs engine. It checks what users
// send; the engine keeps the records and fires, the orchestrator checks the session
// and the API. Handlers return domain errors; the engine's are mapped in fail.
type Jobs struct {
	latchkeyv1.UnimplementedJobServiceServer
	// engine and orch are set when the scheduler starts (SetEngine); calls before that
	// answer Unavailable.
	engine atomic.Pointer[jobs.Engine]
	orch   atomic.Pointer[orch.Orchestrator]
}

func (j *Jobs) project(ctx context.Context) (string, error) {
	if j.engine.Load() == nil {
		return "", errs.New(errs.ErrUnavailable, "the scheduler is starting: try again in a moment")
	}
	p, _ := server.PrincipalFrom(ctx)
	if p.ProjectID == "" {
		return "", errs.New(errs.ErrDenied, "Jobs belong to a project: call with a project API key (the admin key manages projects only)")
	}
	return p.ProjectID, nil
}

// SetEngine makes JobService answer; the scheduler calls it when it has started.
func (j *Jobs) SetEngine(e *jobs.Engine, o *orch.Orchestrator) {
	j.orch.Store(o)
	j.engine.Store(e)
}

// CreateJob creates a Job, ACTIVE unless created paused.
func (j *Jobs) CreateJob(ctx context.Context, req *latchkeyv1.CreateJobRequest) (*latchkeyv1.CreateJobResponse, error) {
	proj, err := j.project(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetJob() == nil {
		return nil, invalid("job is required: at least its api and auth_session_id")
	}
	in := proto.CloneOf(req.GetJob())
	if in.Id == "" {
		in.Id = orch.NewID("job")
	} else if _, err := bus.ProjectKey(proj, in.GetId()); err != nil {
		return nil, invalid("job.id %.80q may hold only letters, digits, '-', '_', '=' and '/' (at most %d bytes); leave it empty to get one", in.GetId(), bus.MaxTokenLen)
	}
	if err := checkJob(in, time.Now()); err != nil {
		return nil, err
	}
	sess, err := j.checkSession(ctx, proj, in.GetAuthSessionId(), "creating")
	if err != nil {
		return nil, err
	}
	if _, err := j.orch.Load().BundleVersion(ctx, proj, sess.GetSite(), in.GetApi()); err != nil {
		return nil, err
	}
	job := &latchkeyv1.Job{
		Id: in.GetId(), ProjectId: proj, DisplayName: in.GetDisplayName(), Api: in.GetApi(), AuthSessionId: in.GetAuthSessionId(),
		Schedule: in.GetSchedule(), Payloads: in.GetPayloads(), RunOptions: in.GetRunOptions(),
		MaxConcurrency: max(in.GetMaxConcurrency(), 1), State: latchkeyv1.JobState_JOB_STATE_ACTIVE,
	}
	if req.GetPaused() {
		job.State = latchkeyv1.JobState_JOB_STATE_PAUSED
	}
	created, err := j.engine.Load().Create(ctx, job)
	if errors.Is(err, jobs.ErrJobExists) {
		return nil, errs.New(errs.ErrExists, "job %q exists in this project: pick another id, or update it", job.GetId())
	}
	if err != nil {
		return nil, fmt.Errorf("creating job: %w", err)
	}
	return &latchkeyv1.CreateJobResponse{Job: created}, nil
}

// checkSession answers NotFound for a session not in the project and
// FailedPrecondition (reason AUTH_SESSION_EXPIRED) for an EXPIRED one: Jobs on it
// cannot be created, resumed or triggered until a person fixes it.
func (j *Jobs) checkSession(ctx context.Context, proj, id, doing string) (*latchkeyv1.AuthSession, error) {
	sess, err := j.orch.Load().CheckSession(ctx, proj, id, doing+" the job")
	if errors.Is(err, orch.ErrSessionNotFound) && doing != "creating" {
		return nil, errs.New(errs.ErrPrecondition, "the job's auth session %q no longer exists: delete the job and create one on another session", id)
	}
	return sess, err
}

// job reads one Job of the caller's project; another project's Job is NotFound.
func (j *Jobs) job(ctx context.Context, id string) (string, *latchkeyv1.Job, error) {
	proj, err := j.project(ctx)
	if err != nil {
		return "", nil, err
	}
	if err := bus.CheckToken(id); err != nil {
		return "", nil, invalid("job_id: %v", err)
	}
	rec, _, err := j.engine.Load().Store().GetJob(ctx, proj, id)
	if err != nil {
		return "", nil, j.fail(id, "reading job", err)
	}
	return proj, rec.GetJob(), nil
}

// fail maps the engine's errors to the user's; others pass on as they are.
func (j *Jobs) fail(id, doing string, err error) error {
	switch {
	case errors.Is(err, jobs.ErrJobNotFound):
		return errs.New(errs.ErrNotFound, "job %q not found in this project", id)
	case errors.Is(err, jobs.ErrJobRunNotFound):
		return errs.New(errs.ErrNotFound, "job run %q not found in this project", id)
	case errors.Is(err, jobs.ErrCompleted):
		return errs.New(errs.ErrPrecondition, "job %q is COMPLETED (a once-Job that has fired): trigger it, or update its schedule to run it again", id)
	}
	if busy := (*jobs.BusyError)(nil); errors.As(err, &busy) {
		return errs.New(errs.ErrPrecondition, "job %q is running already (job run %s): wait for it to end, or follow it with ListJobRuns", id, busy.JobRunID)
	}
	if errs.IsUser(err) {
		return err
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// GetJob returns one Job.
func (j *Jobs) GetJob(ctx context.Context, req *latchkeyv1.GetJobRequest) (*latchkeyv1.GetJobResponse, error) {
	_, job, err := j.job(ctx, req.GetJobId())
	if err != nil {
		return nil, err
	}
	return &latchkeyv1.GetJobResponse{Job: job}, nil
}

// UpdateJob changes the fields named in update_mask.
func (j *Jobs) UpdateJob(ctx context.Context, req *latchkeyv1.UpdateJobRequest) (*latchkeyv1.UpdateJobResponse, error) {
	in := req.GetJob()
	if in == nil {
		return nil, invalid("job is required, with its id and the fields to change")
	}
	proj, _, err := j.job(ctx, in.GetId())
	if err != nil {
		return nil, err
	}
	paths := req.GetUpdateMask().GetPaths()
	if err := checkMask(in, paths, time.Now()); err != nil {
		return nil, err
	}
	job, err := j.engine.Load().Update(ctx, proj, in.GetId(), func(job *latchkeyv1.Job) error { return applyMask(job, in, paths) })
	if err != nil {
		return nil, j.fail(in.GetId(), "updating job", err)
	}
	return &latchkeyv1.UpdateJobResponse{Job: job}, nil
}

// DeleteJob deletes a Job and its JobRuns, canceling the running one's Runs.
func (j *Jobs) DeleteJob(ctx context.Context, req *latchkeyv1.DeleteJobRequest) (*latchkeyv1.DeleteJobResponse, error) {
	proj, _, err := j.job(ctx, req.GetJobId())
	if err != nil {
		return nil, err
	}
	if err := j.engine.Load().Delete(ctx, proj, req.GetJobId()); err != nil {
		return nil, j.fail(req.GetJobId(), "deleting job", err)
	}
	return &latchkeyv1.DeleteJobResponse{}, nil
}

// PauseJob stops a Job from firing; a running JobRun finishes.
func (j *Jobs) PauseJob(ctx context.Context, req *latchkeyv1.PauseJobRequest) (*latchkeyv1.PauseJobResponse, error) {
	proj, _, err := j.job(ctx, req.GetJobId())
	if err != nil {
		return nil, err
	}
	job, err := j.engine.Load().Pause(ctx, proj, req.GetJobId(), 0)
	if err != nil {
		return nil, j.fail(req.GetJobId(), "pausing job", err)
	}
	return &latchkeyv1.PauseJobResponse{Job: job}, nil
}

// ResumeJob lets a paused Job fire again; FailedPrecondition while its session is EXPIRED.
func (j *Jobs) ResumeJob(ctx context.Context, req *latchkeyv1.ResumeJobRequest) (*latchkeyv1.ResumeJobResponse, error) {
	proj, job, err := j.job(ctx, req.GetJobId())
	if err != nil {
		return nil, err
	}
	if _, err := j.checkSession(ctx, proj, job.GetAuthSessionId(), "resuming"); err != nil {
		return nil, err
	}
	job, err = j.engine.Load().Resume(ctx, proj, req.GetJobId())
	if err != nil {
		return nil, j.fail(req.GetJobId(), "resuming job", err)
	}
	return &latchkeyv1.ResumeJobResponse{Job: job}, nil
}

// TriggerJob fires a Job now, outside its schedule.
func (j *Jobs) TriggerJob(ctx context.Context, req *latchkeyv1.TriggerJobRequest) (*latchkeyv1.TriggerJobResponse, error) {
	proj, job, err := j.job(ctx, req.GetJobId())
	if err != nil {
		return nil, err
	}
	if _, err := j.checkSession(ctx, proj, job.GetAuthSessionId(), "triggering"); err != nil {
		return nil, err
	}
	jr, err := j.engine.Load().Trigger(ctx, proj, req.GetJobId())
	if err != nil {
		return nil, j.fail(req.GetJobId(), "triggering job", err)
	}
	return &latchkeyv1.TriggerJobResponse{JobRun: jr}, nil
}

// GetJobRun returns one firing.
func (j *Jobs) GetJobRun(ctx context.Context, req *latchkeyv1.GetJobRunRequest) (*latchkeyv1.GetJobRunResponse, error) {
	proj, err := j.project(ctx)
	if err != nil {
		return nil, err
	}
	id := req.GetJobRunId()
	if err := bus.CheckToken(id); err != nil {
		return nil, invalid("job_run_id: %v", err)
	}
	rec, _, err := j.engine.Load().Store().GetJobRun(ctx, proj, id)
	if err != nil {
		return nil, j.fail(id, "reading job run", err)
	}
	return &latchkeyv1.GetJobRunResponse{JobRun: rec.GetJobRun()}, nil
}
