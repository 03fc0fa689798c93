package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/testkit"
)

// TestJobKeepsFiringAcrossSchedulerRestart runs the scheduler apart from the other
// services and replaces it while an interval Job is firing: nothing about Jobs lives
// only in the scheduler's memory, so the new scheduler ends the firing the old one
// left running and goes on firing the Job.
func TestJobKeepsFiringAcrossSchedulerRestart(t *testing.T) {
	p, url := testkit.Portal(t, portal.Config{})
	core := stacktest.Start(t, stacktest.Options{Services: []string{"vault", "registry", "runner"}, Env: map[string]string{"LATCHKEY_CHROMIUM_PATH": testkit.ChromiumPath(t)}})
	schedOpts := stacktest.Options{
		Services: []string{"scheduler"},
		Env:      map[string]string{"LATCHKEY_NATS_URL": core.NATSURL()},
		Args:     []string{"-registry-addr", core.GRPCAddr(), "-vault-addr", core.GRPCAddr()},
	}
	sched := stacktest.Start(t, schedOpts)
	admin := core.Dial(t, core.AdminKey)
	created, err := latchkeyv1.NewProjectServiceClient(admin).CreateProject(t.Context(), &latchkeyv1.CreateProjectRequest{ProjectId: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	key := created.GetApiKeySecret()
	w := &world{st: core, portal: p, portalURL: url, conn: core.Dial(t, key)}
	w.sessions = latchkeyv1.NewAuthSessionServiceClient(w.conn)
	w.deploy(t)
	// A RECORDER session with an imported state needs no login, so the registry needs
	// no scheduler address (see TestSchedulerRestartMidRun).
	sessResp, err := w.sessions.CreateAuthSession(t.Context(), &latchkeyv1.CreateAuthSessionRequest{
		Type: latchkeyv1.SessionType_SESSION_TYPE_RECORDER, Vars: map[string]string{"baseURL": url},
		Recorder: &latchkeyv1.RecorderSettings{StartUrl: url + "/login", FinishUrlPrefix: url + "/dashboard"},
	})
	if err != nil {
		t.Fatal(err)
	}
	sessID := sessResp.GetAuthSession().GetId()
	if _, err := w.sessions.ImportStorageState(t.Context(), &latchkeyv1.ImportStorageStateRequest{AuthSessionId: sessID, StorageStateJson: loggedInState(t, url)}); err != nil {
		t.Fatalf("import: %v", err)
	}

	jc := latchkeyv1.NewJobServiceClient(sched.Dial(t, key))
	w.runs = latchkeyv1.NewRunServiceClient(sched.Dial(t, key))
	job, err := jc.CreateJob(t.Context(), &latchkeyv1.CreateJobRequest{Job: &latchkeyv1.Job{
		Api: "list-invoices", AuthSessionId: sessID, Schedule: every(2 * time.Second),
	}})
	if err != nil {
		t.Fatalf("CreateJob: %v", err)
	}
	id := job.GetJob().GetId()
	w.waitJobRuns(t, jc, id, 1)
	// Stop the scheduler while a firing's Run is in the browser.
	p.SetFault(portal.Fault{Delay: 1500 * time.Millisecond})
	var inFlight string
	for deadline := time.Now().Add(60 * time.Second); inFlight == ""; time.Sleep(100 * time.Millisecond) {
		resp, err := jc.ListJobRuns(t.Context(), &latchkeyv1.ListJobRunsRequest{JobId: id, PageSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		if jr := resp.GetJobRuns(); len(jr) == 1 && !jobRunEnded(jr[0].GetState()) {
			inFlight = jr[0].GetId()
		}
		if time.Now().After(deadline) {
			t.Fatal("the job did not fire again within 60 s")
		}
	}
	time.Sleep(500 * time.Millisecond) // its Run is in the browser now
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	sched.Shutdown(ctx)
	cancel()
	p.SetFault(portal.Fault{})

	sched2 := stacktest.Start(t, schedOpts)
	jc = latchkeyv1.NewJobServiceClient(sched2.Dial(t, key))
	w.runs = latchkeyv1.NewRunServiceClient(sched2.Dial(t, key))
	if jr := w.waitJobRun(t, jc, inFlight); jr.GetState() != latchkeyv1.JobRunState_JOB_RUN_STATE_SUCCEEDED {
		t.Fatalf("the firing running when the scheduler stopped = %v\nlogs:\n%s", jr, tail(sched2.Logs.String()))
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
