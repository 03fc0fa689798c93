package e2e

import (
	"testing"
	"time"

	"github.com/latchkey/latchkey/examples/portal"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// TestJobKeepsFiringAcrossSchedulerRestart runs the scheduler apart from the other
// services and replaces it while an interval Job is firing: nothing about Jobs lives
// only in the scheduler's memory, so the new scheduler ends the firing the old one
// left running and goes on firing the Job.
func TestJobKeepsFiringAcrossSchedulerRestart(t *testing.T) {
	t.Parallel()
	w := newSplitWorld(t)
	jc := latchkeyv1.NewJobServiceClient(w.sched.Dial(t, w.key))
	job, err := jc.CreateJob(t.Context(), &latchkeyv1.CreateJobRequest{Job: &latchkeyv1.Job{
		Api: "list-invoices", AuthSessionId: w.sessionID, Schedule: every(2 * time.Second),
	}})
	if err != nil {
		t.Fatalf("CreateJob: %v", err)
	}
	id := job.GetJob().GetId()
	w.waitJobRuns(t, jc, id, 1)
	// Stop the scheduler while a firing's Run is in the browser.
	w.portal.SetFault(portal.Fault{Delay: 1500 * time.Millisecond})
	seen := w.portal.Counters().Requests
	var inFlight string
	w.eventually(t, 60*time.Second, func() (bool, string) {
		resp, err := jc.ListJobRuns(t.Context(), &latchkeyv1.ListJobRunsRequest{JobId: id, PageSize: 1})
		if err != nil {
			return false, err.Error()
		}
		if jr := resp.GetJobRuns(); len(jr) == 1 && !jobRunEnded(jr[0].GetState()) {
			inFlight = jr[0].GetId()
		}
		return inFlight != "", "the job did not fire again"
	})
	w.waitPortalRequest(t, seen) // a Run is in the browser now, held by the delay
	w.restartScheduler(t)
	w.portal.SetFault(portal.Fault{})
	jc = latchkeyv1.NewJobServiceClient(w.sched.Dial(t, w.key))
	if jr := w.waitJobRun(t, jc, inFlight); jr.GetState() != latchkeyv1.JobRunState_JOB_RUN_STATE_SUCCEEDED {
		t.Fatalf("the firing running when the scheduler stopped = %v\nlogs:\n%s", jr, tail(w.sched.Logs.String()))
	}
	before, _ := jobRuns(t, jc, id)
	for _, jr := range w.waitJobRuns(t, jc, id, len(before)+2)[:2] {
		if jr.GetState() != latchkeyv1.JobRunState_JOB_RUN_STATE_SUCCEEDED {
			t.Fatalf("a firing by the new scheduler = %v", jr)
		}
		if runs := w.childRuns(t, jr.GetId()); len(runs) != 1 || runs[0].GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			t.Fatalf("runs of firing %s = %v", jr.GetId(), runs)
		}
	}
}
