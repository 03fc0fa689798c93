package api

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/errs"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/services/scheduler/internal/jobs"
	"github.com/latchkey/latchkey/services/scheduler/internal/orch"
)

// Limits of Jobs besides those of the jobs package.
const (
	MaxDisplayName = 200
	// OnceGrace is how far in the past a once time may be at creation (clock skew); it
	// then fires at once.
	OnceGrace = time.Minute
)

// updatableJob are the paths UpdateJob accepts.
var updatableJob = []string{"display_name", "schedule", "payloads", "run_options", "max_concurrency"}

func invalid(format string, args ...any) error {
	return errs.New(errs.ErrInvalid, format, args...)
}

// checkJob checks the fields a user sets on a Job. Output-only fields are ignored.
func checkJob(job *latchkeyv1.Job, now time.Time) error {
	switch {
	case job.GetApi() == "":
		return invalid("job.api is required: the name of a deployed automation, for example list-invoices")
	case job.GetAuthSessionId() == "":
		return invalid("job.auth_session_id is required: Jobs run with one AuthSession")
	}
	if err := checkDisplayName(job.GetDisplayName()); err != nil {
		return err
	}
	if err := checkSchedule(job.GetSchedule(), now); err != nil {
		return err
	}
	if err := checkPayloads(job); err != nil {
		return err
	}
	return checkConcurrency(job.GetMaxConcurrency())
}

func checkDisplayName(name string) error {
	if !utf8.ValidString(name) || utf8.RuneCountInString(name) > MaxDisplayName {
		return invalid("job.display_name must be valid UTF-8 of at most %d characters", MaxDisplayName)
	}
	return nil
}

func checkSchedule(s *latchkeyv1.Schedule, now time.Time) error {
	if _, err := jobs.ParseSchedule(s); err != nil {
		return invalid("job.%v", err)
	}
	if once := s.GetOnce(); once != nil && once.AsTime().Before(now.Add(-OnceGrace)) {
		return invalid("job.schedule.once %s is in the past: give a future time, or use TriggerJob to run it now", once.AsTime().Format(time.RFC3339))
	}
	return nil
}

func checkConcurrency(n int32) error {
	if n < 0 || n > jobs.MaxConcurrency {
		return invalid("job.max_concurrency must be between 1 and %d (0 means 1)", jobs.MaxConcurrency)
	}
	return nil
}

// checkPayloads checks the payload count and sizes, and the run options, the way
// StartRun checks one Run's params and options.
func checkPayloads(job *latchkeyv1.Job) error {
	if n := len(job.GetPayloads()); n > jobs.MaxPayloads {
		return invalid("job.payloads has %d entries, at most %d are allowed (one Run each per firing)", n, jobs.MaxPayloads)
	}
	total := 0
	for i, p := range job.GetPayloads() {
		size := proto.Size(p)
		if size > orch.MaxParamsBytes {
			return invalid("job.payloads[%d] is %d bytes, at most %d are allowed", i, size, orch.MaxParamsBytes)
		}
		total += size
	}
	if total > jobs.MaxPayloadsBytes {
		return invalid("job.payloads are %d bytes in all, at most %d are allowed", total, jobs.MaxPayloadsBytes)
	}
	if err := orch.ValidateRunOptions(&latchkeyv1.StartRunRequest{Api: job.GetApi(), Options: job.GetRunOptions()}); err != nil {
		msg := strings.Replace(err.Error(), "options.", "job.run_options.", 1)
		return invalid("%s", msg)
	}
	return nil
}

// checkMask checks UpdateJob's field mask and the fields it names.
func checkMask(in *latchkeyv1.Job, paths []string, now time.Time) error {
	if len(paths) == 0 {
		return invalid("update_mask is required: name the fields to change among %v", updatableJob)
	}
	for _, p := range paths {
		if !slices.Contains(updatableJob, p) {
			return invalid("update_mask path %.80q cannot be updated: use %v (to change the api or the session, create a new Job)", p, updatableJob)
		}
	}
	checks := map[string]func() error{
		"display_name":    func() error { return checkDisplayName(in.GetDisplayName()) },
		"schedule":        func() error { return checkSchedule(in.GetSchedule(), now) },
		"max_concurrency": func() error { return checkConcurrency(in.GetMaxConcurrency()) },
		"payloads":        func() error { return nil }, // checked with the whole Job
		"run_options":     func() error { return nil },
	}
	for _, p := range paths {
		if err := checks[p](); err != nil {
			return err
		}
	}
	return nil
}

// applyMask copies the fields named in paths from in to job and checks the result.
func applyMask(job, in *latchkeyv1.Job, paths []string) error {
	for _, p := range paths {
		switch p {
		case "display_name":
			job.DisplayName = in.GetDisplayName()
		case "schedule":
			job.Schedule = in.GetSchedule()
		case "payloads":
			job.Payloads = in.GetPayloads()
		case "run_options":
			job.RunOptions = in.GetRunOptions()
		case "max_concurrency":
			job.MaxConcurrency = max(in.GetMaxConcurrency(), 1)
		default:
			return fmt.Errorf("unexpected path %q", p)
		}
	}
	return checkPayloads(job)
}
