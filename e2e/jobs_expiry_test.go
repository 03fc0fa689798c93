package e2e

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// TestJobPausesWhenItsSessionExpires: alice changes her password on the portal and
// her sessions there end. The Job's next Run finds the session logged out, the login
// with the stored (old) password is rejected once, the session is EXPIRED
// (INVALID_CREDENTIALS), and the Job is PAUSED with reason AUTH_SESSION_EXPIRED: it
// fires no more, and ResumeJob and TriggerJob answer FailedPrecondition until the
// session's credentials are updated. Then ResumeJob makes it fire again.
func TestJobPausesWhenItsSessionExpires(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	sess := w.readySession(t)
	jc := latchkeyv1.NewJobServiceClient(w.conn)
	created, err := jc.CreateJob(t.Context(), &latchkeyv1.CreateJobRequest{Job: &latchkeyv1.Job{
		Api: "list-invoices", AuthSessionId: sess.GetId(), Schedule: every(2 * time.Second),
	}})
	if err != nil {
		t.Fatalf("CreateJob: %v", err)
	}
	id := created.GetJob().GetId()
	if first := w.waitJobRuns(t, jc, id, 1)[0]; first.GetState() != latchkeyv1.JobRunState_JOB_RUN_STATE_SUCCEEDED {
		t.Fatalf("first firing = %v", first)
	}

	const newPassword = "through-the-looking-glass"
	failed := w.portal.Counters().FailedLogins
	if err := w.portal.SetPassword(portal.AliceUsername, newPassword); err != nil {
		t.Fatal(err)
	}
	w.portal.ExpireSessions()

	var j *latchkeyv1.Job
	w.eventually(t, 90*time.Second, func() (bool, string) {
		resp, err := jc.GetJob(t.Context(), &latchkeyv1.GetJobRequest{JobId: id})
		if err != nil {
			return false, fmt.Sprintf("GetJob %s: %v", id, err)
		}
		j = resp.GetJob()
		return j.GetState() == latchkeyv1.JobState_JOB_STATE_PAUSED, fmt.Sprintf("job = %s after its session's password changed, want PAUSED", j.GetState())
	})
	if j.GetPauseReason() != latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED || j.GetNextFireTime() != nil {
		t.Fatalf("paused job = %v, want reason AUTH_SESSION_EXPIRED and no next fire time", j)
	}
	if got := w.session(t, sess.GetId()); got.GetState() != latchkeyv1.SessionState_SESSION_STATE_EXPIRED || got.GetStateReason() != latchkeyv1.FailureReason_FAILURE_REASON_INVALID_CREDENTIALS {
		t.Fatalf("session = %s %s, want EXPIRED INVALID_CREDENTIALS", got.GetState(), got.GetStateReason())
	}
	w.waitMetric(t, "latchkey_job_events_total", map[string]string{"event": "paused", "reason": "AUTH_SESSION_EXPIRED"}, 1)
	ended := w.waitQuiet(t, jc, id)
	last := ended[0]
	if last.GetState() != latchkeyv1.JobRunState_JOB_RUN_STATE_CANCELED || last.GetRunsCanceled() != 1 {
		t.Errorf("the firing that met the expiry = %v, want CANCELED with its Run canceled", last)
	}
	for _, run := range w.childRuns(t, last.GetId()) {
		if run.GetState() != latchkeyv1.RunState_RUN_STATE_CANCELED || run.GetFailureReason() != latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED {
			t.Errorf("its Run = %s %s, want CANCELED AUTH_SESSION_EXPIRED", run.GetState(), run.GetFailureReason())
		}
	}

	_, err = jc.ResumeJob(t.Context(), &latchkeyv1.ResumeJobRequest{JobId: id})
	if status.Code(err) != codes.FailedPrecondition || !hasReason(err, "AUTH_SESSION_EXPIRED") {
		t.Errorf("ResumeJob on an EXPIRED session: %v, want FailedPrecondition AUTH_SESSION_EXPIRED", err)
	}
	_, err = jc.TriggerJob(t.Context(), &latchkeyv1.TriggerJobRequest{JobId: id})
	if status.Code(err) != codes.FailedPrecondition || !hasReason(err, "AUTH_SESSION_EXPIRED") {
		t.Errorf("TriggerJob on an EXPIRED session: %v, want FailedPrecondition AUTH_SESSION_EXPIRED", err)
	}
	// Three intervals and a half of nothing happening is the subject: a paused Job
	// must not fire, and there is no event to wait for instead.
	time.Sleep(7 * time.Second)
	if now, running := jobRuns(t, jc, id); len(now) != len(ended) || running != 0 {
		t.Errorf("a job paused by its session's expiry fired: %d firings (was %d), %d running", len(now), len(ended), running)
	}
	if got := w.portal.Counters().FailedLogins - failed; got != 1 {
		t.Errorf("the portal saw %d failed logins, want exactly 1 (a wrong password is never retried)", got)
	}

	// A person fixes the credentials; the Job can be resumed and fires again.
	upd, err := w.sessions.UpdateAuthSessionCredentials(t.Context(), &latchkeyv1.UpdateAuthSessionCredentialsRequest{
		AuthSessionId: sess.GetId(), Credentials: map[string]string{"username": portal.AliceUsername, "password": newPassword},
	})
	if err != nil {
		t.Fatalf("UpdateAuthSessionCredentials: %v", err)
	}
	if run := w.wait(t, upd.GetUpdateRunId()); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("credentials update = %s %s: %s", run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
	}
	resumed, err := jc.ResumeJob(t.Context(), &latchkeyv1.ResumeJobRequest{JobId: id})
	if err != nil {
		t.Fatalf("ResumeJob after the credentials were fixed: %v", err)
	}
	if resumed.GetJob().GetState() != latchkeyv1.JobState_JOB_STATE_ACTIVE || resumed.GetJob().GetPauseReason() != 0 {
		t.Fatalf("resumed job = %v", resumed.GetJob())
	}
	if next := w.waitJobRuns(t, jc, id, len(ended)+1)[0]; next.GetState() != latchkeyv1.JobRunState_JOB_RUN_STATE_SUCCEEDED {
		t.Fatalf("first firing after resume = %v", next)
	}
}
