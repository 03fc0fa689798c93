package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// echoRecipe is an API that opens the logged-in invoices page and echoes its param n,
// so a test sees which payload reached which Run.
var echoRecipe = &latchkeyv1.BundleFile{Path: "echo.yaml", Content: []byte(`
apis:
  echo-invoices:
    description: The account name of the logged-in user, and the param n.
    steps:
      - goto: "{{ .Vars.baseURL }}/invoices"
      - waitVisible: "#invoices"
      - extract: { as: account, selector: "#account-name" }
      - evaluate: { script: "'{{ .Params.n }}'", as: n }
`)}

func every(d time.Duration) *latchkeyv1.Schedule {
	return &latchkeyv1.Schedule{Schedule: &latchkeyv1.Schedule_Interval{Interval: durationpb.New(d)}}
}

func jobRunEnded(s latchkeyv1.JobRunState) bool {
	return s != latchkeyv1.JobRunState_JOB_RUN_STATE_RUNNING && s != latchkeyv1.JobRunState_JOB_RUN_STATE_UNSPECIFIED
}

// jobRuns lists a Job's firings, newest first, split into ended ones and the number
// still running.
func jobRuns(t testing.TB, jc latchkeyv1.JobServiceClient, jobID string) (ended []*latchkeyv1.JobRun, running int) {
	t.Helper()
	ended, running, err := listJobRuns(t.Context(), jc, jobID)
	if err != nil {
		t.Fatal(err)
	}
	return ended, running
}

// listJobRuns is jobRuns returning its error, for polls that try again.
func listJobRuns(ctx context.Context, jc latchkeyv1.JobServiceClient, jobID string) (ended []*latchkeyv1.JobRun, running int, err error) {
	resp, err := jc.ListJobRuns(ctx, &latchkeyv1.ListJobRunsRequest{JobId: jobID, PageSize: 500})
	if err != nil {
		return nil, 0, fmt.Errorf("ListJobRuns %s: %w", jobID, err)
	}
	for _, jr := range resp.GetJobRuns() {
		if jobRunEnded(jr.GetState()) {
			ended = append(ended, jr)
		} else {
			running++
		}
	}
	return ended, running, nil
}

// waitJobRuns waits (up to 90 s) until the Job has at least n ended firings and
// returns them, newest first.
func (w *world) waitJobRuns(t testing.TB, jc latchkeyv1.JobServiceClient, jobID string, n int) []*latchkeyv1.JobRun {
	t.Helper()
	var ended []*latchkeyv1.JobRun
	w.eventually(t, 90*time.Second, func() (bool, string) {
		var err error
		if ended, _, err = listJobRuns(t.Context(), jc, jobID); err != nil {
			return false, err.Error()
		}
		return len(ended) >= n, fmt.Sprintf("job %s: %d firings ended, want %d", jobID, len(ended), n)
	})
	return ended
}

// waitQuiet waits (up to 90 s) until no firing of the Job is running and returns the
// ended ones.
func (w *world) waitQuiet(t testing.TB, jc latchkeyv1.JobServiceClient, jobID string) []*latchkeyv1.JobRun {
	t.Helper()
	var ended []*latchkeyv1.JobRun
	w.eventually(t, 90*time.Second, func() (bool, string) {
		var running int
		var err error
		if ended, running, err = listJobRuns(t.Context(), jc, jobID); err != nil {
			return false, err.Error()
		}
		return running == 0, fmt.Sprintf("job %s still has %d running firings", jobID, running)
	})
	return ended
}

// waitJobRun polls one firing until it ends (up to 90 s).
func (w *world) waitJobRun(t testing.TB, jc latchkeyv1.JobServiceClient, jobRunID string) *latchkeyv1.JobRun {
	t.Helper()
	var jr *latchkeyv1.JobRun
	w.eventually(t, 90*time.Second, func() (bool, string) {
		resp, err := jc.GetJobRun(t.Context(), &latchkeyv1.GetJobRunRequest{JobRunId: jobRunID})
		if err != nil {
			return false, fmt.Sprintf("GetJobRun %s: %v", jobRunID, err)
		}
		jr = resp.GetJobRun()
		return jobRunEnded(jr.GetState()), fmt.Sprintf("job run %s did not end: %v", jobRunID, jr)
	})
	return jr
}

// childRuns lists the Runs of a firing.
func (w *world) childRuns(t testing.TB, jobRunID string) []*latchkeyv1.Run {
	t.Helper()
	resp, err := w.runs.ListRuns(t.Context(), &latchkeyv1.ListRunsRequest{JobRunId: jobRunID, PageSize: 500})
	if err != nil {
		t.Fatalf("ListRuns of job run %s: %v", jobRunID, err)
	}
	return resp.GetRuns()
}

// job reads a Job.
func job(t testing.TB, jc latchkeyv1.JobServiceClient, id string) *latchkeyv1.Job {
	t.Helper()
	resp, err := jc.GetJob(t.Context(), &latchkeyv1.GetJobRequest{JobId: id})
	if err != nil {
		t.Fatalf("GetJob %s: %v", id, err)
	}
	return resp.GetJob()
}
