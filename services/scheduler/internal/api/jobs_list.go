package api

import (
	"context"
	"slices"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

func pageSize(n int32) (int, error) {
	switch {
	case n < 0 || n > MaxPageSize:
		return 0, invalid("page_size must be between 0 and %d", MaxPageSize)
	case n == 0:
		return DefaultPageSize, nil
	}
	return int(n), nil
}

// after returns the index of the first id that follows the page token in ids sorted
// by cmp; ids need not contain the token (its record may be gone).
func after(ids []string, token string, cmp func(a, b string) int) int {
	if token == "" {
		return 0
	}
	i, found := slices.BinarySearchFunc(ids, token, cmp)
	if found {
		i++
	}
	return i
}

// ListJobs lists the project's Jobs in id order, optionally those of one session. The
// page token is the last Job id of the previous page.
func (j *Jobs) ListJobs(ctx context.Context, req *latchkeyv1.ListJobsRequest) (*latchkeyv1.ListJobsResponse, error) {
	proj, err := jobsProject(ctx)
	if err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	st := j.Engine.Store()
	ids, err := st.JobIDs(ctx, proj)
	if err != nil {
		return nil, j.Runs.internal(ctx, "listing jobs", err)
	}
	out := &latchkeyv1.ListJobsResponse{PageInfo: &latchkeyv1.PageInfo{}}
	for _, id := range ids[after(ids, req.GetPageToken(), compare):] {
		rec, _, err := st.GetJob(ctx, proj, id)
		if err != nil || (req.GetAuthSessionId() != "" && rec.GetJob().GetAuthSessionId() != req.GetAuthSessionId()) {
			continue
		}
		if len(out.Jobs) == size {
			out.PageInfo.NextPageToken = out.Jobs[len(out.Jobs)-1].GetId()
			break
		}
		out.Jobs = append(out.Jobs, rec.GetJob())
	}
	return out, nil
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
	st := j.Engine.Store()
	ids, err := st.JobRunIDs(ctx, proj, req.GetJobId())
	if err != nil {
		return nil, j.Runs.internal(ctx, "listing job runs", err)
	}
	out := &latchkeyv1.ListJobRunsResponse{PageInfo: &latchkeyv1.PageInfo{}}
	newestFirst := func(a, b string) int { return -compare(a, b) }
	for _, id := range ids[after(ids, req.GetPageToken(), newestFirst):] {
		rec, _, err := st.GetJobRun(ctx, proj, id)
		if err != nil {
			continue
		}
		if len(out.JobRuns) == size {
			out.PageInfo.NextPageToken = out.JobRuns[len(out.JobRuns)-1].GetId()
			break
		}
		out.JobRuns = append(out.JobRuns, rec.GetJobRun())
	}
	return out, nil
}
