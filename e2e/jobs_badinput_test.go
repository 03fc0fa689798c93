package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// TestJobServiceRejectsBadInput: every mistake gets the right code and a message that
// names what to fix, and another project's Jobs and JobRuns do not exist for a caller.
func TestJobServiceRejectsBadInput(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	sess := w.readySession(t)
	jc := latchkeyv1.NewJobServiceClient(w.conn)
	good := func() *latchkeyv1.Job {
		return &latchkeyv1.Job{Api: "list-invoices", AuthSessionId: sess.GetId(), Schedule: every(time.Hour)}
	}
	with := func(f func(j *latchkeyv1.Job)) *latchkeyv1.Job { j := good(); f(j); return j }
	cron := func(spec, zone string) *latchkeyv1.Schedule {
		return &latchkeyv1.Schedule{Schedule: &latchkeyv1.Schedule_Cron{Cron: spec}, TimeZone: zone}
	}
	many := make([]*structpb.Struct, 1001)
	for i := range many {
		many[i] = &structpb.Struct{}
	}
	ninetyNine := int32(99)

	existing, err := jc.CreateJob(t.Context(), &latchkeyv1.CreateJobRequest{Job: with(func(j *latchkeyv1.Job) { j.Id = "nightly" }), Paused: true})
	if err != nil {
		t.Fatalf("CreateJob: %v", err)
	}
	if existing.GetJob().GetState() != latchkeyv1.JobState_JOB_STATE_PAUSED {
		t.Fatalf("a job created paused is %s", existing.GetJob().GetState())
	}
	fired, err := jc.TriggerJob(t.Context(), &latchkeyv1.TriggerJobRequest{JobId: "nightly"}) // a paused Job may still be fired by hand
	if err != nil {
		t.Fatalf("TriggerJob of a paused job: %v", err)
	}

	creates := []struct {
		name string
		job  *latchkeyv1.Job
		code codes.Code
		want string
	}{
		{"no job", nil, codes.InvalidArgument, "job is required"},
		{"no api", with(func(j *latchkeyv1.Job) { j.Api = "" }), codes.InvalidArgument, "job.api"},
		{"unknown api", with(func(j *latchkeyv1.Job) { j.Api = "no-such-api" }), codes.NotFound, "no-such-api"},
		{"no session", with(func(j *latchkeyv1.Job) { j.AuthSessionId = "" }), codes.InvalidArgument, "job.auth_session_id"},
		{"unknown session", with(func(j *latchkeyv1.Job) { j.AuthSessionId = "nobody" }), codes.NotFound, "nobody"},
		{"bad cron", with(func(j *latchkeyv1.Job) { j.Schedule = cron("every monday", "") }), codes.InvalidArgument, "schedule.cron"},
		{"minute out of range", with(func(j *latchkeyv1.Job) { j.Schedule = cron("61 * * * *", "") }), codes.InvalidArgument, "schedule.cron \"61 * * * *\": "},
		{"cron with seconds", with(func(j *latchkeyv1.Job) { j.Schedule = cron("0 */5 * * * *", "") }), codes.InvalidArgument, "five fields"},
		{"bad time zone", with(func(j *latchkeyv1.Job) { j.Schedule = cron("0 9 * * 1-5", "Europe/Atlantis") }), codes.InvalidArgument, "schedule.time_zone"},
		{"interval too short", with(func(j *latchkeyv1.Job) {
			j.Schedule = &latchkeyv1.Schedule{Schedule: &latchkeyv1.Schedule_Interval{Interval: durationpb.New(time.Millisecond)}}
		}), codes.InvalidArgument, "schedule.interval"},
		{"once in the past", with(func(j *latchkeyv1.Job) {
			j.Schedule = &latchkeyv1.Schedule{Schedule: &latchkeyv1.Schedule_Once{Once: timestamppb.New(time.Now().Add(-time.Hour))}}
		}), codes.InvalidArgument, "schedule.once"},
		{"too many payloads", with(func(j *latchkeyv1.Job) { j.Payloads = many }), codes.InvalidArgument, "at most 1000"},
		{"negative concurrency", with(func(j *latchkeyv1.Job) { j.MaxConcurrency = -1 }), codes.InvalidArgument, "max_concurrency"},
		{"too much concurrency", with(func(j *latchkeyv1.Job) { j.MaxConcurrency = 1000 }), codes.InvalidArgument, "max_concurrency"},
		{"bad run options", with(func(j *latchkeyv1.Job) { j.RunOptions = &latchkeyv1.RunOptions{CheckAttempts: &ninetyNine} }), codes.InvalidArgument, "run_options.check_attempts"},
		{"id with a dot", with(func(j *latchkeyv1.Job) { j.Id = "a.b" }), codes.InvalidArgument, "job.id"},
		{"id taken", with(func(j *latchkeyv1.Job) { j.Id = "nightly" }), codes.AlreadyExists, "nightly"},
	}
	for _, tc := range creates {
		t.Run("create/"+tc.name, func(t *testing.T) {
			_, err := jc.CreateJob(t.Context(), &latchkeyv1.CreateJobRequest{Job: tc.job})
			wantStatus(t, err, tc.code, tc.want)
		})
	}

	mask := func(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }
	updates := []struct {
		name string
		req  *latchkeyv1.UpdateJobRequest
		code codes.Code
		want string
	}{
		{"no mask", &latchkeyv1.UpdateJobRequest{Job: &latchkeyv1.Job{Id: "nightly"}}, codes.InvalidArgument, "update_mask is required"},
		{"api is fixed", &latchkeyv1.UpdateJobRequest{Job: &latchkeyv1.Job{Id: "nightly", Api: "x"}, UpdateMask: mask("api")}, codes.InvalidArgument, "cannot be updated"},
		{"session is fixed", &latchkeyv1.UpdateJobRequest{Job: &latchkeyv1.Job{Id: "nightly"}, UpdateMask: mask("auth_session_id")}, codes.InvalidArgument, "cannot be updated"},
		{"bad cron", &latchkeyv1.UpdateJobRequest{Job: &latchkeyv1.Job{Id: "nightly", Schedule: cron("* *", "")}, UpdateMask: mask("schedule")}, codes.InvalidArgument, "schedule.cron"},
		{"too many payloads", &latchkeyv1.UpdateJobRequest{Job: &latchkeyv1.Job{Id: "nightly", Payloads: many}, UpdateMask: mask("payloads")}, codes.InvalidArgument, "payloads"},
		{"unknown job", &latchkeyv1.UpdateJobRequest{Job: &latchkeyv1.Job{Id: "nope", DisplayName: "x"}, UpdateMask: mask("display_name")}, codes.NotFound, "nope"},
	}
	for _, tc := range updates {
		t.Run("update/"+tc.name, func(t *testing.T) {
			_, err := jc.UpdateJob(t.Context(), tc.req)
			wantStatus(t, err, tc.code, tc.want)
		})
	}
	t.Run("update/a good one", func(t *testing.T) {
		resp, err := jc.UpdateJob(t.Context(), &latchkeyv1.UpdateJobRequest{
			Job: &latchkeyv1.Job{Id: "nightly", DisplayName: "Nightly sync", Schedule: cron("30 2 * * *", "Europe/Paris")}, UpdateMask: mask("display_name", "schedule"),
		})
		if err != nil {
			t.Fatal(err)
		}
		if j := resp.GetJob(); j.GetDisplayName() != "Nightly sync" || j.GetSchedule().GetCron() != "30 2 * * *" || j.GetApi() != "list-invoices" || j.GetState() != latchkeyv1.JobState_JOB_STATE_PAUSED {
			t.Errorf("updated job = %v", j)
		}
	})

	if _, err := jc.GetJob(t.Context(), &latchkeyv1.GetJobRequest{JobId: "bad.id"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetJob with a malformed id: %v", err)
	}
	if _, err := jc.ListJobs(t.Context(), &latchkeyv1.ListJobsRequest{PageSize: -1}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ListJobs with page_size -1: %v", err)
	}

	// Another project sees none of acme's Jobs.
	admin := w.st.Dial(t, w.st.AdminKey)
	other, err := latchkeyv1.NewProjectServiceClient(admin).CreateProject(t.Context(), &latchkeyv1.CreateProjectRequest{ProjectId: "globex"})
	if err != nil {
		t.Fatal(err)
	}
	oc := latchkeyv1.NewJobServiceClient(w.st.Dial(t, other.GetApiKeySecret()))
	calls := map[string]func(context.Context) error{
		"GetJob": func(ctx context.Context) error {
			_, err := oc.GetJob(ctx, &latchkeyv1.GetJobRequest{JobId: "nightly"})
			return err
		},
		"PauseJob": func(ctx context.Context) error {
			_, err := oc.PauseJob(ctx, &latchkeyv1.PauseJobRequest{JobId: "nightly"})
			return err
		},
		"ResumeJob": func(ctx context.Context) error {
			_, err := oc.ResumeJob(ctx, &latchkeyv1.ResumeJobRequest{JobId: "nightly"})
			return err
		},
		"TriggerJob": func(ctx context.Context) error {
			_, err := oc.TriggerJob(ctx, &latchkeyv1.TriggerJobRequest{JobId: "nightly"})
			return err
		},
		"DeleteJob": func(ctx context.Context) error {
			_, err := oc.DeleteJob(ctx, &latchkeyv1.DeleteJobRequest{JobId: "nightly"})
			return err
		},
		"ListJobRuns": func(ctx context.Context) error {
			_, err := oc.ListJobRuns(ctx, &latchkeyv1.ListJobRunsRequest{JobId: "nightly"})
			return err
		},
		"GetJobRun": func(ctx context.Context) error {
			_, err := oc.GetJobRun(ctx, &latchkeyv1.GetJobRunRequest{JobRunId: fired.GetJobRun().GetId()})
			return err
		},
		"UpdateJob": func(ctx context.Context) error {
			_, err := oc.UpdateJob(ctx, &latchkeyv1.UpdateJobRequest{Job: &latchkeyv1.Job{Id: "nightly", DisplayName: "x"}, UpdateMask: mask("display_name")})
			return err
		},
		"CreateJob on acme's session": func(ctx context.Context) error {
			_, err := oc.CreateJob(ctx, &latchkeyv1.CreateJobRequest{Job: good()})
			return err
		},
	}
	for name, call := range calls {
		t.Run("other project/"+name, func(t *testing.T) {
			wantStatus(t, call(t.Context()), codes.NotFound, "not found in this project")
		})
	}
	list, err := oc.ListJobs(t.Context(), &latchkeyv1.ListJobsRequest{})
	if err != nil || len(list.GetJobs()) != 0 {
		t.Errorf("another project lists %d jobs (%v), want none", len(list.GetJobs()), err)
	}
	// The job is untouched by all of that.
	if j := job(t, jc, "nightly"); j.GetDisplayName() != "Nightly sync" {
		t.Errorf("acme's job after the other project's calls = %v", j)
	}
	w.waitJobRun(t, jc, fired.GetJobRun().GetId())
}

// wantStatus checks an error's code and that its message says want.
func wantStatus(t *testing.T, err error, code codes.Code, want string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code || !strings.Contains(st.Message(), want) {
		t.Fatalf("got %s %q, want %s mentioning %q", st.Code(), st.Message(), code, want)
	}
}
