package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

const jobsUsage = `usage: latchkey jobs COMMAND

  create -api API -session ID [-cron EXPR [-tz ZONE] | -every D | -at TIME]
         [-payloads JSON | -payloads-file FILE|-] [-max-concurrency N] [-paused]
         [-id ID] [-name NAME] [-timeout D] [-retries N]
                           create a Job; no schedule makes an on-demand batch (see trigger)
  get ID                   show one Job
  list [-session ID]       list Jobs
  update ID [-name N] [-cron EXPR [-tz ZONE] | -every D | -at TIME | -batch]
            [-payloads JSON | -payloads-file FILE|-] [-max-concurrency N]
                           change a Job; only the flags given change
  delete ID                delete a Job; its running firing's Runs are canceled
  pause ID | resume ID     stop a Job firing / let it fire again
  trigger ID               fire a Job now
  runs ID [-limit N]       list a Job's firings (JobRuns), newest first; their Runs:
                           latchkey runs list -job-run JOBRUN_ID

-payloads is a JSON array of objects, one Run per object per firing, each seen by the
recipe as .Params: '[{"month": "2026-01"}, {"month": "2026-02"}]'. -at takes RFC 3339
("2026-05-01T09:00:00Z"); -cron five fields ("*/15 * * * *") in -tz (default UTC).
`

// jobsCommand runs `latchkey jobs ...`.
func jobsCommand(ctx context.Context, c *cli, args []string) error {
	type j = sub[latchkeyv1.JobServiceClient]
	return dispatch(ctx, c, args, "jobs", jobsUsage, latchkeyv1.NewJobServiceClient,
		j{"create", jobsCreate}, j{"get", jobsGet}, j{"list", jobsList}, j{"update", jobsUpdate}, j{"delete", jobsDelete},
		j{"pause", jobsPause}, j{"resume", jobsResume}, j{"trigger", jobsTrigger}, j{"runs", jobsRuns})
}

// jobFlags are the settings create and update share.
type jobFlags struct {
	name, cron, tz, at, payloads, payloadsFile string
	every                                      time.Duration
	maxConcurrency                             int
	batch                                      bool
}

func (f *jobFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.name, "name", "", "display name")
	fs.StringVar(&f.cron, "cron", "", `five-field cron expression, e.g. "*/15 * * * *"`)
	fs.StringVar(&f.tz, "tz", "", "IANA time zone of -cron (default UTC)")
	fs.DurationVar(&f.every, "every", 0, "fire every interval, e.g. 1h")
	fs.StringVar(&f.at, "at", "", "fire once at this RFC 3339 time")
	fs.StringVar(&f.payloads, "payloads", "", "JSON array of objects: one Run per object per firing")
	fs.StringVar(&f.payloadsFile, "payloads-file", "", "read -payloads from a file (- for stdin)")
	fs.IntVar(&f.maxConcurrency, "max-concurrency", 0, "Runs of one firing at once (default 1)")
}

// schedule returns the schedule the flags give, or nil for none.
func (f *jobFlags) schedule() (*latchkeyv1.Schedule, error) {
	n := 0
	for _, set := range []bool{f.cron != "", f.every != 0, f.at != ""} {
		if set {
			n++
		}
	}
	switch {
	case n > 1:
		return nil, errors.New("give one of -cron, -every and -at")
	case f.tz != "" && f.cron == "":
		return nil, errors.New("-tz goes with -cron")
	case f.cron != "":
		return &latchkeyv1.Schedule{Schedule: &latchkeyv1.Schedule_Cron{Cron: f.cron}, TimeZone: f.tz}, nil
	case f.every != 0:
		return &latchkeyv1.Schedule{Schedule: &latchkeyv1.Schedule_Interval{Interval: durationpb.New(f.every)}}, nil
	case f.at != "":
		t, err := time.Parse(time.RFC3339, f.at)
		if err != nil {
			return nil, fmt.Errorf("-at must be an RFC 3339 time like 2026-05-01T09:00:00Z: %w", err)
		}
		return &latchkeyv1.Schedule{Schedule: &latchkeyv1.Schedule_Once{Once: timestamppb.New(t)}}, nil
	}
	return nil, nil
}

// payloadList parses -payloads or -payloads-file; set is false when neither was given.
func (f *jobFlags) payloadList() (list []*structpb.Struct, set bool, err error) {
	raw := f.payloads
	switch {
	case raw != "" && f.payloadsFile != "":
		return nil, false, errors.New("give -payloads or -payloads-file, not both")
	case f.payloadsFile != "":
		b, err := readInput(f.payloadsFile)
		if err != nil {
			return nil, false, fmt.Errorf("reading payloads: %w", err)
		}
		raw = string(b)
	case raw == "":
		return nil, false, nil
	}
	var lv structpb.ListValue
	if err := protojson.Unmarshal([]byte(raw), &lv); err != nil {
		return nil, false, fmt.Errorf("payloads must be a JSON array of objects: %w", err)
	}
	for i, v := range lv.GetValues() {
		s := v.GetStructValue()
		if s == nil {
			return nil, false, fmt.Errorf("payload %d is not a JSON object", i)
		}
		list = append(list, s)
	}
	return list, true, nil
}

func jobsCreate(ctx context.Context, c *cli, jc latchkeyv1.JobServiceClient, args []string) error {
	fs := c.flags("jobs create")
	var f jobFlags
	f.register(fs)
	id := fs.String("id", "", "the Job id (default: generated)")
	api := fs.String("api", "", "the API each Run runs, e.g. list-invoices")
	session := fs.String("session", "", "the AuthSession the Runs use")
	paused := fs.Bool("paused", false, "create the Job paused")
	timeout := fs.Duration("timeout", 0, "deadline of each Run (default 5m)")
	retries := fs.Int("retries", 0, "retries of each Run's API after a transient failure")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sched, err := f.schedule()
	if err != nil {
		return err
	}
	payloads, _, err := f.payloadList()
	if err != nil {
		return err
	}
	job := &latchkeyv1.Job{
		Id: *id, DisplayName: f.name, Api: *api, AuthSessionId: *session, Schedule: sched, Payloads: payloads,
		MaxConcurrency: int32(f.maxConcurrency), RunOptions: &latchkeyv1.RunOptions{Retries: int32(*retries)},
	}
	if *timeout > 0 {
		job.RunOptions.Timeout = durationpb.New(*timeout)
	}
	r, err := jc.CreateJob(ctx, &latchkeyv1.CreateJobRequest{Job: job, Paused: *paused})
	if err != nil {
		return fmt.Errorf("creating the job: %w", err)
	}
	return c.emit(r, func(w *tabwriter.Writer) { jobTable(w, r.GetJob()) })
}

func jobsGet(ctx context.Context, c *cli, jc latchkeyv1.JobServiceClient, args []string) error {
	id, err := oneArgThenFlags(c.flags("jobs get ID"), args, "a job id")
	if err != nil {
		return err
	}
	r, err := jc.GetJob(ctx, &latchkeyv1.GetJobRequest{JobId: id})
	if err != nil {
		return fmt.Errorf("getting job %s: %w", id, err)
	}
	return c.emit(r, func(w *tabwriter.Writer) { jobTable(w, r.GetJob()) })
}

func jobsList(ctx context.Context, c *cli, jc latchkeyv1.JobServiceClient, args []string) error {
	fs := c.flags("jobs list")
	session := fs.String("session", "", "only Jobs of this AuthSession")
	if err := fs.Parse(args); err != nil {
		return err
	}
	all := &latchkeyv1.ListJobsResponse{}
	for token := ""; ; {
		r, err := jc.ListJobs(ctx, &latchkeyv1.ListJobsRequest{AuthSessionId: *session, PageSize: 500, PageToken: token})
		if err != nil {
			return fmt.Errorf("listing jobs: %w", err)
		}
		all.Jobs = append(all.Jobs, r.GetJobs()...)
		if token = r.GetPageInfo().GetNextPageToken(); token == "" {
			break
		}
	}
	return c.emit(all, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tAPI\tSESSION\tSCHEDULE\tSTATE\tNEXT FIRE\tNAME")
		for _, j := range all.GetJobs() {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.GetId(), j.GetApi(), j.GetAuthSessionId(), scheduleText(j.GetSchedule()),
				jobStateText(j), when(j.GetNextFireTime()), j.GetDisplayName())
		}
	})
}

func jobsUpdate(ctx context.Context, c *cli, jc latchkeyv1.JobServiceClient, args []string) error {
	fs := c.flags("jobs update ID")
	var f jobFlags
	f.register(fs)
	fs.BoolVar(&f.batch, "batch", false, "remove the schedule: the Job fires only when triggered")
	id, err := oneArgThenFlags(fs, args, "a job id")
	if err != nil {
		return err
	}
	job := &latchkeyv1.Job{Id: id}
	var paths []string
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "name":
			job.DisplayName, paths = f.name, append(paths, "display_name")
		case "max-concurrency":
			job.MaxConcurrency, paths = int32(f.maxConcurrency), append(paths, "max_concurrency")
		}
	})
	sched, err := f.schedule()
	if err != nil {
		return err
	}
	if sched != nil || f.batch {
		if sched != nil && f.batch {
			return errors.New("-batch removes the schedule: give it without -cron, -every or -at")
		}
		job.Schedule, paths = sched, append(paths, "schedule")
	}
	payloads, set, err := f.payloadList()
	if err != nil {
		return err
	}
	if set {
		job.Payloads, paths = payloads, append(paths, "payloads")
	}
	if len(paths) == 0 {
		return errors.New("nothing to change: give -name, -cron, -every, -at, -batch, -payloads or -max-concurrency")
	}
	r, err := jc.UpdateJob(ctx, &latchkeyv1.UpdateJobRequest{Job: job, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
	if err != nil {
		return fmt.Errorf("updating job %s: %w", id, err)
	}
	return c.emit(r, func(w *tabwriter.Writer) { jobTable(w, r.GetJob()) })
}

func jobsDelete(ctx context.Context, c *cli, jc latchkeyv1.JobServiceClient, args []string) error {
	id, err := oneArgThenFlags(c.flags("jobs delete ID"), args, "a job id")
	if err != nil {
		return err
	}
	r, err := jc.DeleteJob(ctx, &latchkeyv1.DeleteJobRequest{JobId: id})
	if err != nil {
		return fmt.Errorf("deleting job %s: %w", id, err)
	}
	return c.emitLine(r, "deleted job "+id)
}

func jobsPause(ctx context.Context, c *cli, jc latchkeyv1.JobServiceClient, args []string) error {
	id, err := oneArgThenFlags(c.flags("jobs pause ID"), args, "a job id")
	if err != nil {
		return err
	}
	r, err := jc.PauseJob(ctx, &latchkeyv1.PauseJobRequest{JobId: id})
	if err != nil {
		return fmt.Errorf("pausing job %s: %w", id, err)
	}
	return c.emit(r, func(w *tabwriter.Writer) { jobTable(w, r.GetJob()) })
}

func jobsResume(ctx context.Context, c *cli, jc latchkeyv1.JobServiceClient, args []string) error {
	id, err := oneArgThenFlags(c.flags("jobs resume ID"), args, "a job id")
	if err != nil {
		return err
	}
	r, err := jc.ResumeJob(ctx, &latchkeyv1.ResumeJobRequest{JobId: id})
	if err != nil {
		return fmt.Errorf("resuming job %s: %w", id, err)
	}
	return c.emit(r, func(w *tabwriter.Writer) { jobTable(w, r.GetJob()) })
}

func jobsTrigger(ctx context.Context, c *cli, jc latchkeyv1.JobServiceClient, args []string) error {
	id, err := oneArgThenFlags(c.flags("jobs trigger ID"), args, "a job id")
	if err != nil {
		return err
	}
	r, err := jc.TriggerJob(ctx, &latchkeyv1.TriggerJobRequest{JobId: id})
	if err != nil {
		return fmt.Errorf("triggering job %s: %w", id, err)
	}
	return c.emit(r, func(w *tabwriter.Writer) { jobRunTable(w, r.GetJobRun()) })
}

func jobsRuns(ctx context.Context, c *cli, jc latchkeyv1.JobServiceClient, args []string) error {
	fs := c.flags("jobs runs ID")
	limit := fs.Int("limit", 50, "at most this many")
	id, err := oneArgThenFlags(fs, args, "a job id")
	if err != nil {
		return err
	}
	r, err := jc.ListJobRuns(ctx, &latchkeyv1.ListJobRunsRequest{JobId: id, PageSize: int32(*limit)})
	if err != nil {
		return fmt.Errorf("listing runs of job %s: %w", id, err)
	}
	return c.emit(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "JOB RUN\tSTATE\tRUNS\tSUCCEEDED\tFAILED\tCANCELED\tSTARTED\tENDED")
		for _, jr := range r.GetJobRuns() {
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", jr.GetId(), short(jr.GetState().String(), "JOB_RUN_STATE_"),
				jr.GetRunsTotal(), jr.GetRunsSucceeded(), jr.GetRunsFailed(), jr.GetRunsCanceled(), when(jr.GetStartTime()), when(jr.GetEndTime()))
		}
	})
}

func jobTable(w *tabwriter.Writer, j *latchkeyv1.Job) {
	fmt.Fprintf(w, "job\t%s\n", j.GetId())
	if j.GetDisplayName() != "" {
		fmt.Fprintf(w, "name\t%s\n", j.GetDisplayName())
	}
	fmt.Fprintf(w, "api\t%s\n", j.GetApi())
	fmt.Fprintf(w, "session\t%s\n", j.GetAuthSessionId())
	fmt.Fprintf(w, "schedule\t%s\n", scheduleText(j.GetSchedule()))
	fmt.Fprintf(w, "state\t%s\n", jobStateText(j))
	fmt.Fprintf(w, "next fire\t%s\n", when(j.GetNextFireTime()))
	fmt.Fprintf(w, "payloads\t%d (max %d at once)\n", len(j.GetPayloads()), j.GetMaxConcurrency())
}

func jobRunTable(w *tabwriter.Writer, jr *latchkeyv1.JobRun) {
	fmt.Fprintf(w, "job run\t%s\n", jr.GetId())
	fmt.Fprintf(w, "job\t%s\n", jr.GetJobId())
	fmt.Fprintf(w, "state\t%s\n", short(jr.GetState().String(), "JOB_RUN_STATE_"))
	fmt.Fprintf(w, "runs\t%d (follow them: latchkey runs list -job-run %s)\n", jr.GetRunsTotal(), jr.GetId())
}

func jobStateText(j *latchkeyv1.Job) string {
	s := short(j.GetState().String(), "JOB_STATE_")
	if r := j.GetPauseReason(); r != latchkeyv1.FailureReason_FAILURE_REASON_UNSPECIFIED {
		s += " (" + enumName(r.String()) + ")"
	}
	return s
}

func scheduleText(s *latchkeyv1.Schedule) string {
	switch v := s.GetSchedule().(type) {
	case *latchkeyv1.Schedule_Cron:
		zone := s.GetTimeZone()
		if zone == "" {
			zone = "UTC"
		}
		return fmt.Sprintf("cron %q %s", v.Cron, zone)
	case *latchkeyv1.Schedule_Interval:
		return "every " + v.Interval.AsDuration().String()
	case *latchkeyv1.Schedule_Once:
		return "once at " + when(v.Once)
	}
	return "batch (on trigger)"
}
