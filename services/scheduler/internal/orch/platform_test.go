package orch

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// platformFailed is a runner's answer to a task its own infrastructure failed (the
// browser died, the vault or the registry was out of reach).
func platformFailed(task *runnerv1.RunnerTask) *runnerv1.TaskResult {
	res := failed(task, reasonTransient)
	res.CheckOutcome, res.PlatformFault = 0, true
	return res
}

// backOff delivers a platform fault, which must come back as a back-off, and lets the
// back-off pass on the fake clock.
func (h *harness) backOff(res *runnerv1.TaskResult) {
	h.t.Helper()
	retry := h.handle(res)
	if retry == nil {
		h.t.Fatalf("a platform fault of %s was settled at once, want a back-off", res.GetRunId())
	}
	h.noTasks() // nothing is sent before the back-off
	h.clock.Advance(retry.Delay)
}

// TestPlatformFaultSendsTheAPITaskAgain: "a platform fault never fails a user's Run"
// — a task the runner's infrastructure failed is sent again after a back-off, as the
// same attempt with a check of its own, recorded on the Run, with no user retries.
func TestPlatformFaultSendsTheAPITaskAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.add(sessID, typeCredentials, sessReady)
	run := h.start(apiRequest(nil)) // retries: 0

	first := h.takeTask(taskAPI)
	h.backOff(platformFailed(first))
	rec := h.record(run.GetId())
	if rec.GetStage() != schedulerv1.Stage_STAGE_PLATFORM_RETRY || rec.GetRun().GetPlatformRetries() != 1 || rec.GetRun().GetState() != runRunning {
		t.Fatalf("record after the fault = %v, want RUNNING in a platform retry", rec)
	}
	h.wantRun(first.GetCheckRunId(), runFailed, reasonTransient)

	// The redelivered result resumes the Run; a second copy of it sends nothing more.
	h.mustHandle(platformFailed(first))
	h.mustHandle(platformFailed(first))
	again := h.takeTask(taskAPI)
	h.noTasks()
	if again.GetAttempt() != 1 || !again.GetCheckFirst() || again.GetCheckRunId() == first.GetCheckRunId() {
		t.Fatalf("task sent again = %v, want attempt 1 with a check of its own", again)
	}

	h.mustHandle(result(again, statusSucceeded))
	got := h.wantRun(run.GetId(), runSucceeded, noReason).GetRun()
	if got.GetAttempt() != 1 || got.GetPlatformRetries() != 1 || len(got.GetChildRunIds()) != 2 {
		t.Fatalf("run = attempt %d, platform retries %d, checks %v; want 1, 1 and two checks", got.GetAttempt(), got.GetPlatformRetries(), got.GetChildRunIds())
	}
	h.wantRun(again.GetCheckRunId(), runSucceeded, noReason)
}

// TestPlatformRetriesAreBounded: past Policy.PlatformRetries the fault is the
// TRANSIENT failure it is, and the Run's own retries take over from there.
func TestPlatformRetriesAreBounded(t *testing.T) {
	t.Parallel()
	for _, userRetries := range []int32{0, 1} {
		h := newHarness(t, func(p *Policy) { p.PlatformRetries = 2 })
		h.reg.add(sessID, typeCredentials, sessReady)
		run := h.start(apiRequest(&latchkeyv1.RunOptions{Retries: userRetries}))
		task := h.takeTask(taskAPI)
		for range 2 {
			res := platformFailed(task)
			h.backOff(res)
			h.mustHandle(res)
			task = h.takeTask(taskAPI)
		}
		h.mustHandle(platformFailed(task))
		if userRetries == 0 {
			rec := h.wantRun(run.GetId(), runFailed, reasonTransient)
			if msg := rec.GetRun().GetFailureMessage(); !strings.Contains(msg, "after 2 platform retries") {
				t.Errorf("failure message %q does not say the platform retries were used up", msg)
			}
			h.noTasks()
			continue
		}
		next := h.takeTask(taskAPI)
		if next.GetAttempt() != 2 {
			t.Fatalf("after the platform retries, task = %v, want the user's attempt 2", next)
		}
		h.mustHandle(result(next, statusSucceeded))
		if got := h.wantRun(run.GetId(), runSucceeded, noReason).GetRun(); got.GetAttempt() != 2 || got.GetPlatformRetries() != 2 {
			t.Errorf("attempt %d, platform retries %d; want 2 and 2", got.GetAttempt(), got.GetPlatformRetries())
		}
	}
}

// TestPlatformFaultDuringALoginSendsItAgain: a login (and the verification of its
// state) failed by the platform is sent again as the same attempt: it counts no
// create attempt, no login against the budget, no transient login failure.
func TestPlatformFaultDuringALoginSendsItAgain(t *testing.T) {
	t.Parallel()
	// One login in the budget, a circuit that one more transient failure would open:
	// a resend that counted as a login or a failure would expire the session.
	h := newHarness(t, func(p *Policy) { p.SessionBudget, p.CircuitThreshold = 1, 1 })
	h.reg.add(sessID, typeCredentials, sessReady)
	run, _ := h.startFailingCheck(nil)
	createID := h.createChild(run.GetId())

	create := h.takeTask(taskCreate)
	h.backOff(platformFailed(create))
	h.mustHandle(platformFailed(create))
	create = h.takeTask(taskCreate)
	h.mustHandle(loggedIn(create))

	verify := h.takeTask(taskCheck)
	h.backOff(platformFailed(verify))
	h.mustHandle(platformFailed(verify))
	again := h.takeTask(taskCheck)
	if !again.GetFreshContext() || string(again.GetCandidateStateCiphertext()) != string(verify.GetCandidateStateCiphertext()) {
		t.Fatalf("verification sent again = %v, want the same candidate in a fresh context", again)
	}
	h.mustHandle(checked(again, valid))

	got := h.wantRun(createID, runSucceeded, noReason).GetRun()
	if got.GetAttempt() != 1 || got.GetPlatformRetries() != 2 {
		t.Errorf("login Run: attempt %d, platform retries %d; want 1 and 2", got.GetAttempt(), got.GetPlatformRetries())
	}
	h.wantSession(sessID, sessReady, noReason)
	h.mustHandle(result(h.takeTask(taskAPI), statusSucceeded))
	h.wantRun(run.GetId(), runSucceeded, noReason)
}

// TestRedeliveredTaskIsRecorded: a task JetStream delivered again because a runner
// died holding it is recorded on the Run, once however many copies of its result.
func TestRedeliveredTaskIsRecorded(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.add(sessID, typeCredentials, sessReady)
	run := h.start(apiRequest(nil))
	task := h.takeTask(taskAPI)
	res := result(task, statusSucceeded)
	res.Delivery = 3
	h.mustHandle(res)
	h.mustHandle(proto.CloneOf(res))
	if got := h.wantRun(run.GetId(), runSucceeded, noReason).GetRun(); got.GetPlatformRetries() != 2 {
		t.Errorf("platform retries %d, want 2 (the task was delivered 3 times)", got.GetPlatformRetries())
	}
}

// TestPlatformFaultOfARunPastItsDeadline: the Run's deadline still bounds it.
func TestPlatformFaultOfARunPastItsDeadline(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(p *Policy) { p.PlatformBackoffBase, p.PlatformBackoffMax = time.Hour, time.Hour })
	h.reg.add(sessID, typeCredentials, sessReady)
	run := h.start(apiRequest(nil))
	h.handle(platformFailed(h.takeTask(taskAPI)))
	h.clock.Advance(DefaultTimeout + time.Second)
	h.sweep()
	h.wantRun(run.GetId(), runFailed, reasonTimeout)
	h.noTasks()
}

// TestTaskThatCannotBeQueuedIsSentAgain: a task JetStream refuses (its stream's
// leader lost, the server out of reach) parks the Run for a platform retry; the sweep
// sends it once the stream takes messages again. StartRun itself succeeds.
func TestTaskThatCannotBeQueuedIsSentAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.add(sessID, typeCredentials, sessReady)
	ctx := t.Context()
	info, err := h.taskStream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The stream refuses new tasks: full, with one message of another pool.
	if _, err := h.o.JS.Publish(ctx, "lk.tasks.elsewhere", []byte("x")); err != nil {
		t.Fatal(err)
	}
	full := info.Config
	full.MaxMsgs, full.Discard = 1, jetstream.DiscardNew
	if _, err := h.o.JS.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}

	run := h.start(apiRequest(nil))
	rec := h.record(run.GetId())
	if rec.GetStage() != schedulerv1.Stage_STAGE_PLATFORM_RETRY || rec.GetRun().GetPlatformRetries() != 1 {
		t.Fatalf("record after a refused publish = %v, want a platform retry", rec)
	}
	h.clock.Advance(10 * time.Millisecond)
	h.sweep() // still refused: it stays parked, one more retry counted
	if got := h.record(run.GetId()).GetRun().GetPlatformRetries(); got != 2 {
		t.Fatalf("platform retries %d after a second refusal, want 2", got)
	}

	if _, err := h.o.JS.UpdateStream(ctx, info.Config); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(10 * time.Millisecond)
	h.sweep()
	task := h.takeTask(taskAPI)
	h.mustHandle(result(task, statusSucceeded))
	if got := h.wantRun(run.GetId(), runSucceeded, noReason).GetRun(); got.GetAttempt() != 1 || got.GetPlatformRetries() != 2 {
		t.Errorf("attempt %d, platform retries %d; want 1 and 2", got.GetAttempt(), got.GetPlatformRetries())
	}
}
