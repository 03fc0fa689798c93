package orch

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/domain"
	"github.com/latchkey/latchkey/libs/errs"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
)

// TestCheckRunsBeforeEveryAPIAttempt: DESIGN.md §3, "the check runs before every API
// attempt, as a separate AUTHSESSION_VALIDATE Run in the record, but executed in the
// same browser context" — one API task with check_first names a VALIDATE child Run,
// and a retried attempt checks again with a new child.
func TestCheckRunsBeforeEveryAPIAttempt(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.add(sessID, typeCredentials, sessReady)
	run := h.start(apiRequest(&latchkeyv1.RunOptions{Retries: 1}))

	first := h.takeTask(taskAPI)
	if !first.GetCheckFirst() || first.GetCheckRunId() == "" || first.GetAttempt() != 1 ||
		first.GetSession().GetStateRevision() != 1 || first.GetApi() != apiName || first.GetBundleVersion() != 3 {
		t.Fatalf("first task = %v, want attempt 1 of %s with check_first on revision 1", first, apiName)
	}
	rec := h.wantRun(run.GetId(), runRunning, noReason)
	if rec.GetStage() != schedulerv1.Stage_STAGE_DISPATCHED || rec.GetTaskId() != first.GetTaskId() ||
		rec.GetChildRunId() != first.GetCheckRunId() || !slices.Equal(rec.GetRun().GetChildRunIds(), []string{first.GetCheckRunId()}) {
		t.Fatalf("record after dispatch = %v", rec)
	}
	child := h.wantRun(first.GetCheckRunId(), runRunning, noReason).GetRun()
	if child.GetKind() != latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_VALIDATE || child.GetParentRunId() != run.GetId() ||
		child.GetApi() != recipe.CheckAPI || child.GetAuthSessionId() != sessID {
		t.Fatalf("validate child = %v", child)
	}

	// The check passed, the API failed transiently: the retry checks again.
	h.mustHandle(failed(first, reasonTransient))
	h.wantRun(first.GetCheckRunId(), runSucceeded, noReason)
	second := h.takeTask(taskAPI)
	if !second.GetCheckFirst() || second.GetCheckRunId() == "" || second.GetCheckRunId() == first.GetCheckRunId() || second.GetAttempt() != 2 {
		t.Fatalf("retry task = %v, want attempt 2 with its own check", second)
	}
	h.wantRun(second.GetCheckRunId(), runRunning, noReason)

	h.mustHandle(result(second, statusSucceeded))
	rec = h.wantRun(run.GetId(), runSucceeded, noReason)
	h.wantRun(second.GetCheckRunId(), runSucceeded, noReason)
	if got := rec.GetRun().GetChildRunIds(); !slices.Equal(got, []string{first.GetCheckRunId(), second.GetCheckRunId()}) || rec.GetRun().GetAttempt() != 2 {
		t.Fatalf("children %v attempt %d, want both checks and attempt 2", got, rec.GetRun().GetAttempt())
	}
	h.noTasks()
	h.wantSession(sessID, sessReady, noReason)
}

// TestValidationFreshnessSkipsTheCheck: a Run may skip its check when the session
// passed one within its validation_freshness (off by default).
func TestValidationFreshnessSkipsTheCheck(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		validated time.Duration // how long ago the session passed a check; 0: never
		freshness time.Duration
		wantCheck bool
	}{
		{"off by default", time.Second, 0, true},
		{"validated within the window", 10 * time.Second, time.Minute, false},
		{"validated before the window", 2 * time.Minute, time.Minute, true},
		{"never validated", 0, time.Minute, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.reg.add(sessID, typeCredentials, sessReady)
			if tc.validated > 0 {
				h.reg.edit(sessID, func(s *latchkeyv1.AuthSession) {
					s.LastValidateTime = timestamppb.New(h.clock.Now().Add(-tc.validated))
				})
			}
			opts := &latchkeyv1.RunOptions{}
			if tc.freshness > 0 {
				opts.ValidationFreshness = durationpb.New(tc.freshness)
			}
			run := h.start(apiRequest(opts))
			task := h.takeTask(taskAPI)
			rec := h.record(run.GetId())
			if task.GetCheckFirst() != tc.wantCheck || (task.GetCheckRunId() != "") != tc.wantCheck || (len(rec.GetRun().GetChildRunIds()) == 1) != tc.wantCheck {
				t.Fatalf("check_first=%v check_run_id=%q children=%v, want a check: %v", task.GetCheckFirst(), task.GetCheckRunId(), rec.GetRun().GetChildRunIds(), tc.wantCheck)
			}
			h.mustHandle(result(task, statusSucceeded))
			h.wantRun(run.GetId(), runSucceeded, noReason)
		})
	}
}

// TestFailedValidationCancelsTheRun: "A Run whose validation fails is CANCELED, not
// FAILED" — with auto_recreate off nothing logs in, and the Run ends CANCELED
// (AUTH_SESSION_EXPIRED) while its VALIDATE child records the failed check.
func TestFailedValidationCancelsTheRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.add(sessID, typeCredentials, sessReady)
	run, task := h.startFailingCheck(&latchkeyv1.RunOptions{AutoRecreate: proto.Bool(false)})

	h.wantRun(run.GetId(), runCanceled, reasonExpired)
	h.wantRun(task.GetCheckRunId(), runFailed, reasonExpired)
	h.noTasks()
	if n := h.reg.transitionsTo(sessRecreating); n != 0 {
		t.Errorf("%d recreate transitions, want none with auto_recreate off", n)
	}
	h.wantSession(sessID, sessReady, noReason)
}

// TestStartOnAnExpiredSession: "StartRun on an EXPIRED session answers
// FAILED_PRECONDITION at once, with reason AUTH_SESSION_EXPIRED" — but the Runs that
// fix the session (an update of its credentials, a recording) are started.
func TestStartOnAnExpiredSession(t *testing.T) {
	t.Parallel()
	t.Run("API runs are refused", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		h.reg.add(sessID, typeCredentials, sessExpired)
		_, err := h.o.Start(t.Context(), testProject, apiRequest(nil), StartOptions{})
		if !errors.Is(err, ErrSessionExpired) || !errors.Is(err, errs.ErrPrecondition) || !errs.HasReason(err, ReasonSessionExpired) ||
			!errs.HasReason(err, "AUTH_SESSION_EXPIRED") || status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("Start on an EXPIRED session: %v (code %s)", err, status.Code(err))
		}
		if ids, err := h.o.Store.Keys(t.Context(), testProject); err != nil || len(ids) != 0 {
			t.Fatalf("runs stored: %v, %v", ids, err)
		}
		h.noTasks()
	})
	fixes := []struct {
		name     string
		typ      latchkeyv1.SessionType
		kind     latchkeyv1.RunKind
		wantTask func(h *harness)
	}{
		{"an update of its credentials is started", typeCredentials, latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE, func(h *harness) {
			task := h.takeTask(taskCreate)
			if got := task.GetCredentials().GetSecretId(); got != domain.PendingCredentialsSecret(sessID) {
				h.t.Fatalf("update logs in with secret %q, want the pending credentials %q", got, domain.PendingCredentialsSecret(sessID))
			}
		}},
		{"a recording is started", typeRecorder, latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_RECORD, func(h *harness) {
			task := h.takeTask(taskRecord)
			if task.GetRecord().GetStartUrl() != "https://portal.example/login" || !task.GetFreshContext() {
				h.t.Fatalf("record task = %v", task)
			}
		}},
	}
	for _, tc := range fixes {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.reg.add(sessID, tc.typ, sessExpired)
			h.reg.edit(sessID, func(s *latchkeyv1.AuthSession) {
				s.Recorder = &latchkeyv1.RecorderSettings{StartUrl: "https://portal.example/login"}
			})
			req := &latchkeyv1.StartRunRequest{Kind: tc.kind, Api: recipe.CreateAPI, AuthSessionId: sessID}
			if _, err := h.o.Start(t.Context(), testProject, req, StartOptions{}); !errors.Is(err, errs.ErrDenied) {
				t.Fatalf("%s from a public caller: %v, want errs.ErrDenied", tc.kind, err)
			}
			run := h.startInternal(req)
			h.wantRun(run.GetId(), runRunning, noReason)
			tc.wantTask(h)
		})
	}
}

// TestInconclusiveCheckIsRetriedThenFailsTransient: "INCONCLUSIVE is retried up to
// checkAttempts and then fails the Run as transient, leaving the session READY".
func TestInconclusiveCheckIsRetriedThenFailsTransient(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name          string
		checkAttempts *int32
		wantChecks    int
	}{
		{"default: one check", nil, 1},
		{"check_attempts 3", proto.Int32(3), 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.reg.add(sessID, typeCredentials, sessReady)
			run := h.start(apiRequest(&latchkeyv1.RunOptions{CheckAttempts: tc.checkAttempts}))
			var checks []string
			for i := range tc.wantChecks {
				task := h.takeTask(taskAPI)
				if !task.GetCheckFirst() || slices.Contains(checks, task.GetCheckRunId()) {
					t.Fatalf("check %d: task %v, want a new check", i+1, task)
				}
				checks = append(checks, task.GetCheckRunId())
				h.mustHandle(result(task, statusInconclusive))
			}
			h.noTasks()
			rec := h.wantRun(run.GetId(), runFailed, reasonTransient)
			if rec.GetRun().GetAttempt() != 1 {
				t.Errorf("attempt %d, want 1: re-checking is not a new API attempt", rec.GetRun().GetAttempt())
			}
			for _, id := range checks {
				h.wantRun(id, runFailed, reasonTransient)
			}
			h.wantSession(sessID, sessReady, noReason)
			if n := h.reg.transitionsTo(sessRecreating); n != 0 {
				t.Errorf("an inconclusive check led to %d logins", n)
			}
		})
	}
}

// TestTwoCopiesOfOneResultDispatchOnce: a result delivered twice (a consumer
// redelivery, a late answer racing the sweep) and handled by two replicas at once
// makes one next attempt, not two.
func TestTwoCopiesOfOneResultDispatchOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		answer func(*runnerv1.RunnerTask) *runnerv1.TaskResult
	}{
		{"an inconclusive check", func(task *runnerv1.RunnerTask) *runnerv1.TaskResult { return result(task, statusInconclusive) }},
		{"a transient API failure", func(task *runnerv1.RunnerTask) *runnerv1.TaskResult { return failed(task, reasonTransient) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.reg.add(sessID, typeCredentials, sessReady)
			run := h.start(apiRequest(&latchkeyv1.RunOptions{CheckAttempts: proto.Int32(3), Retries: 2}))
			res := tc.answer(h.takeTask(taskAPI))
			var wg sync.WaitGroup
			errc := make(chan error, 2)
			for range 2 {
				wg.Go(func() {
					if err := h.o.HandleResult(t.Context(), res); err != nil && !ErrStale(err) {
						errc <- err
					}
				})
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Errorf("HandleResult: %v", err)
			}
			h.takeTask(taskAPI) // exactly one next task
			if rec := h.record(run.GetId()); rec.GetCheckAttempts()+rec.GetRun().GetAttempt() != 2 {
				t.Errorf("check attempts %d, attempt %d: the result was counted twice", rec.GetCheckAttempts(), rec.GetRun().GetAttempt())
			}
		})
	}
}
