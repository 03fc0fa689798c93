package e2e

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// TestIntervalJobFiresPausesAndResumes: a Job every 2 s fires again and again, each
// firing one SUCCEEDED Run (the Job has no payloads) that carries the JobRun's id and
// the portal's invoices; paused it stops firing, resumed it fires again, deleted it is
// gone with its firings.
func TestIntervalJobFiresPausesAndResumes(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	sess := w.readySession(t)
	jc := latchkeyv1.NewJobServiceClient(w.conn)

	created, err := jc.CreateJob(t.Context(), &latchkeyv1.CreateJobRequest{Job: &latchkeyv1.Job{
		DisplayName: "invoice sync", Api: "list-invoices", AuthSessionId: sess.GetId(), Schedule: every(2 * time.Second),
	}})
	if err != nil {
		t.Fatalf("CreateJob: %v", err)
	}
	j := created.GetJob()
	if j.GetState() != latchkeyv1.JobState_JOB_STATE_ACTIVE || j.GetMaxConcurrency() != 1 || j.GetNextFireTime() == nil || j.GetProjectId() != "acme" {
		t.Fatalf("created job = %v, want ACTIVE, max_concurrency 1, a next fire time", j)
	}

	for _, jr := range w.waitJobRuns(t, jc, j.GetId(), 2) {
		if jr.GetState() != latchkeyv1.JobRunState_JOB_RUN_STATE_SUCCEEDED || jr.GetRunsTotal() != 1 || jr.GetRunsSucceeded() != 1 || jr.GetEndTime() == nil {
			t.Fatalf("job run = %v, want SUCCEEDED with 1 of 1 Runs", jr)
		}
		children := w.childRuns(t, jr.GetId())
		if len(children) != 1 {
			t.Fatalf("job run %s has %d Runs, want 1", jr.GetId(), len(children))
		}
		run := children[0]
		if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED || run.GetJobRunId() != jr.GetId() || run.GetAuthSessionId() != sess.GetId() {
			t.Fatalf("child run = %s job_run_id %q session %q", run.GetState(), run.GetJobRunId(), run.GetAuthSessionId())
		}
		wantInvoices(t, run)
	}

	paused, err := jc.PauseJob(t.Context(), &latchkeyv1.PauseJobRequest{JobId: j.GetId()})
	if err != nil {
		t.Fatalf("PauseJob: %v", err)
	}
	if p := paused.GetJob(); p.GetState() != latchkeyv1.JobState_JOB_STATE_PAUSED || p.GetNextFireTime() != nil || p.GetPauseReason() != 0 {
		t.Fatalf("paused job = %v", p)
	}
	before := len(w.waitQuiet(t, jc, j.GetId()))
	// Three intervals and a half of nothing happening is the subject: a paused Job
	// must not fire, and there is no event to wait for instead.
	time.Sleep(7 * time.Second)
	if ended, running := jobRuns(t, jc, j.GetId()); len(ended) != before || running != 0 {
		t.Fatalf("a paused job fired: %d firings ended (was %d), %d running", len(ended), before, running)
	}

	resumed, err := jc.ResumeJob(t.Context(), &latchkeyv1.ResumeJobRequest{JobId: j.GetId()})
	if err != nil {
		t.Fatalf("ResumeJob: %v", err)
	}
	if r := resumed.GetJob(); r.GetState() != latchkeyv1.JobState_JOB_STATE_ACTIVE || !r.GetNextFireTime().AsTime().After(time.Now().Add(-time.Second)) {
		t.Fatalf("resumed job = %v, want ACTIVE with its next fire time from now", r)
	}
	after := w.waitJobRuns(t, jc, j.GetId(), before+1)
	if newest := after[0]; newest.GetState() != latchkeyv1.JobRunState_JOB_RUN_STATE_SUCCEEDED {
		t.Fatalf("first firing after resume = %v", newest)
	}

	if _, err := jc.DeleteJob(t.Context(), &latchkeyv1.DeleteJobRequest{JobId: j.GetId()}); err != nil {
		t.Fatalf("DeleteJob: %v", err)
	}
	if _, err := jc.GetJob(t.Context(), &latchkeyv1.GetJobRequest{JobId: j.GetId()}); status.Code(err) != codes.NotFound {
		t.Errorf("GetJob after delete: %v, want NotFound", err)
	}
	if _, err := jc.GetJobRun(t.Context(), &latchkeyv1.GetJobRunRequest{JobRunId: after[0].GetId()}); status.Code(err) != codes.NotFound {
		t.Errorf("GetJobRun of a deleted job: %v, want NotFound", err)
	}
}

// TestBatchJobRunsEachPayloadWithBoundedConcurrency: a batch of five payloads with
// max_concurrency 2, fired by TriggerJob, makes one JobRun of five Runs, never more than
// two of them alive at once; each payload reached its Run's recipe as params; a second
// trigger while it runs is refused, and once it ended the batch can run again.
func TestBatchJobRunsEachPayloadWithBoundedConcurrency(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	w.deploy(t, echoRecipe)
	sess := w.readySession(t)
	jc := latchkeyv1.NewJobServiceClient(w.conn)

	const n = 5
	var payloads []*structpb.Struct
	for i := range n {
		payloads = append(payloads, &structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewStringValue(strconv.Itoa(i))}})
	}
	created, err := jc.CreateJob(t.Context(), &latchkeyv1.CreateJobRequest{Job: &latchkeyv1.Job{
		Id: "monthly-echo", Api: "echo-invoices", AuthSessionId: sess.GetId(), Payloads: payloads, MaxConcurrency: 2,
	}})
	if err != nil {
		t.Fatalf("CreateJob: %v", err)
	}
	if j := created.GetJob(); j.GetState() != latchkeyv1.JobState_JOB_STATE_ACTIVE || j.GetNextFireTime() != nil {
		t.Fatalf("batch job = %v, want ACTIVE with no next fire time", j)
	}

	trig, err := jc.TriggerJob(t.Context(), &latchkeyv1.TriggerJobRequest{JobId: "monthly-echo"})
	if err != nil {
		t.Fatalf("TriggerJob: %v", err)
	}
	if jr := trig.GetJobRun(); jr.GetRunsTotal() != n || jr.GetJobId() != "monthly-echo" {
		t.Fatalf("triggered job run = %v, want %d Runs", jr, n)
	}
	if _, err := jc.TriggerJob(t.Context(), &latchkeyv1.TriggerJobRequest{JobId: "monthly-echo"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a second trigger while the first runs: %v, want FailedPrecondition", err)
	}

	jr := w.waitJobRun(t, jc, trig.GetJobRun().GetId())
	if jr.GetState() != latchkeyv1.JobRunState_JOB_RUN_STATE_SUCCEEDED || jr.GetRunsSucceeded() != n || jr.GetRunsFailed() != 0 || jr.GetRunsCanceled() != 0 {
		t.Fatalf("job run = %v, want SUCCEEDED %d of %d", jr, n, n)
	}
	children := w.childRuns(t, jr.GetId())
	if len(children) != n {
		t.Fatalf("job run has %d Runs, want %d", len(children), n)
	}
	var seen []string
	type span struct{ from, to time.Time }
	var spans []span
	for _, run := range children {
		p := run.GetParams().GetFields()["n"].GetStringValue()
		out := run.GetOutput().GetStructValue().GetFields()
		if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED || run.GetJobRunId() != jr.GetId() {
			t.Fatalf("child run %s = %s (%s) job_run_id %q", run.GetId(), run.GetState(), run.GetFailureMessage(), run.GetJobRunId())
		}
		if out["n"].GetStringValue() != p || out["account"].GetStringValue() == "" {
			t.Errorf("run %s with params n=%q echoed n=%q account=%q", run.GetId(), p, out["n"].GetStringValue(), out["account"].GetStringValue())
		}
		seen = append(seen, p)
		spans = append(spans, span{run.GetCreateTime().AsTime(), run.GetEndTime().AsTime()})
	}
	slices.Sort(seen)
	if !slices.Equal(seen, []string{"0", "1", "2", "3", "4"}) {
		t.Errorf("payloads run = %v, want each of 0..4 once", seen)
	}
	// The most Runs alive at once: at each Run's creation, count those created and not
	// yet ended.
	most := 0
	for _, s := range spans {
		alive := 0
		for _, o := range spans {
			if !o.from.After(s.from) && o.to.After(s.from) {
				alive++
			}
		}
		most = max(most, alive)
	}
	if most > 2 {
		t.Errorf("%d Runs of the firing were alive at once, want at most 2 (max_concurrency)", most)
	}
	t.Logf("at most %d Runs alive at once", most)

	again, err := jc.TriggerJob(t.Context(), &latchkeyv1.TriggerJobRequest{JobId: "monthly-echo"})
	if err != nil {
		t.Fatalf("triggering the batch again: %v", err)
	}
	if jr := w.waitJobRun(t, jc, again.GetJobRun().GetId()); jr.GetState() != latchkeyv1.JobRunState_JOB_RUN_STATE_SUCCEEDED {
		t.Fatalf("second firing = %v", jr)
	}
	list, err := jc.ListJobRuns(t.Context(), &latchkeyv1.ListJobRunsRequest{JobId: "monthly-echo", PageSize: 1})
	if err != nil || len(list.GetJobRuns()) != 1 || list.GetJobRuns()[0].GetId() != again.GetJobRun().GetId() || list.GetPageInfo().GetNextPageToken() == "" {
		t.Fatalf("first page of job runs = %v, %v; want the newest and a next page", list, err)
	}
	next, err := jc.ListJobRuns(t.Context(), &latchkeyv1.ListJobRunsRequest{JobId: "monthly-echo", PageSize: 1, PageToken: list.GetPageInfo().GetNextPageToken()})
	if err != nil || len(next.GetJobRuns()) != 1 || next.GetJobRuns()[0].GetId() != jr.GetId() {
		t.Fatalf("second page of job runs = %v, %v; want the first firing", next, err)
	}
}
