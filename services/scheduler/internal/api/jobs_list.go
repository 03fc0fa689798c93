package api

import (
	"context"
	"fmt"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// ListJobs lists the project's Jobs in id order, optionally those of one session. The
// page token is the last Job id of the previous page.
func (j *Jobs) ListJobs(ctx context.Context, req *latchkeyv1.ListJobsRequest) (*latchkeyv1.ListJobsResponse, error) {
	proj, err := j.project(ctx)
	if err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	st := j.engine.Load().Store()
	ids, err := st.JobIDs(ctx, proj)
	if err != nil {
		return nil, fmt.Errorf("listing jobs: %w", err)
	}
	jobs, info := page(ids, req.GetPageToken(), compare, size, func(id string) (*latchkeyv1.Job, bool) {
		rec, _, err := st.GetJob(ctx, proj, id)
		return rec.GetJob(), err == nil && (req.GetAuthSessionId() == "" || rec.GetJob().GetAuthSessionId() == req.GetAuthSessionId())
	})
	return &latchkeyv1.ListJobsResponse{Jobs: jobs, PageInfo: info}, nil
}

// ListJobRuns lists a Job's firings newest first. The page token is the last JobRun
// id of the previous page; ids sort by creation time.
func (j *Jobs) ListJobRuns(ctx context.Context, req *latchkeyv1.ListJobRunsRequest) (*latchkeyv1.ListJobRunsResponse, error) {
	proj, _, err := j.job(ctx, req.GetJobId())
	if err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	st := j.engine.Load().Store()
	ids, err := st.JobRunIDs(ctx, proj, req.GetJobId())
	if err != nil {
		return nil, fmt.Errorf("listing job runs: %w", err)
	}
	runs, info := page(ids, req.GetPageToken(), newestFirst, size, func(id string) (*latchkeyv1.JobRun, bool) {
		rec, _, err := st.GetJobRun(ctx, proj, id)
		return rec.GetJobRun(), err == nil
	})
	return &latchkeyv1.ListJobRunsResponse{JobRuns: runs, PageInfo: info}, nil
}
