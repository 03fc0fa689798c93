package e2e

import (
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
	resp, err := jc.ListJobRuns(t.Context(), &latchkeyv1.ListJobRunsRequest{JobId: jobID, PageSize: 500})
	if err != nil {
		t.Fatalf("ListJobRuns %s: %v", jobID, err)
	}
	for _, jr := range resp.GetJobRuns() {
		if jobRunEnded(jr.GetState()) {
			ended = append(ended, jr)
		} else {
			running++
		}
	}
	return ended, running
}

// waitJobRuns waits (up to 90 s) until the Job has at least n ended firings and
// returns them, newest first.
func (w *world) waitJobRuns(t testing.TB, jc latchkeyv1.JobServiceClient, jobID string, n int) []*latchkeyv1.JobRun {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ended, _ := jobRuns(t, jc, jobID)
		if len(ended) >= n {
			return ended
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: %d firings ended within 90 s, want %d\nlogs:\n%s", jobID, len(ended), n, tail(w.st.Logs.String()))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitQuiet waits (up to 90 s) until no firing of the Job is running and returns the
// ended ones.
func (w *world) waitQuiet(t testing.TB, jc latchkeyv1.JobServiceClient, jobID string) []*latchkeyv1.JobRun {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ended, running := jobRuns(t, jc, jobID)
		if running == 0 {
			return ended
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still has %d running firings after 90 s\nlogs:\n%s", jobID, running, tail(w.st.Logs.String()))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitJobRun polls one firing until it ends (up to 90 s).
func (w *world) waitJobRun(t testing.TB, jc latchkeyv1.JobServiceClient, jobRunID string) *latchkeyv1.JobRun {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := jc.GetJobRun(t.Context(), &latchkeyv1.GetJobRunRequest{JobRunId: jobRunID})
		if err != nil {
			t.Fatalf("GetJobRun %s: %v", jobRunID, err)
		}
		if jobRunEnded(resp.GetJobRun().GetState()) {
			return resp.GetJobRun()
		}
		if time.Now().After(deadline) {
			t.Fatalf("job run %s did not end within 90 s: %v\nlogs:\n%s", jobRunID, resp.GetJobRun(), tail(w.st.Logs.String()))
		}
		time.Sleep(200 * time.Millisecond)
	}
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
