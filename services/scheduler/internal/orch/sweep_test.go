package orch

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/domain"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// stuckAfter is the sweep's patience in these tests (the scheduler's default).
const stuckAfter = 30 * time.Second

// sweep runs one recovery sweep.
func (h *harness) sweep() {
	h.t.Helper()
	if err := h.o.Sweep(h.t.Context(), stuckAfter); err != nil {
		h.t.Fatalf("Sweep: %v", err)
	}
}

// TestSweepReDrivesLostRuns: the sweep re-drives Runs whose next message was lost —
// a task no runner answered within TaskTimeout+stuckAfter, a wake-up that never
// came, a back-off whose redelivery never came, a Run stored but never dispatched —
// and fails a Run past its deadline with TIMEOUT. Time is the fake clock's.
func TestSweepReDrivesLostRuns(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// lose sets up a Run whose next message is lost and returns its id.
		lose func(h *harness) string
		wait time.Duration
		// then checks what the sweep did.
		then func(h *harness, id string)
	}{
		{"a task still within its time is left alone", func(h *harness) string {
			return h.start(apiRequest(&latchkeyv1.RunOptions{Retries: 1})).GetId()
		}, 45 * time.Second, func(h *harness, id string) {
			h.takeTask(taskAPI)
			h.noTasks()
			if rec := h.wantRun(id, runRunning, noReason); rec.GetStage() != schedulerv1.Stage_STAGE_DISPATCHED || rec.GetRun().GetAttempt() != 1 {
				h.t.Errorf("record %v, want attempt 1 still dispatched", rec)
			}
		}},
		{"a task nobody answered is sent again, as a platform fault", func(h *harness) string {
			return h.start(apiRequest(nil)).GetId()
		}, time.Minute + stuckAfter + time.Second, func(h *harness, id string) {
			lost := h.takeTask(taskAPI)
			h.noTasks() // not before the back-off
			if rec := h.record(id); rec.GetStage() != schedulerv1.Stage_STAGE_PLATFORM_RETRY || rec.GetRun().GetPlatformRetries() != 1 {
				h.t.Fatalf("record %v, want a platform retry", rec)
			}
			h.clock.Advance(10 * time.Millisecond)
			h.sweep() // no result comes back to resume it: the sweep does
			again := h.takeTask(taskAPI)
			if again.GetAttempt() != 1 || !again.GetCheckFirst() || again.GetRunId() != id || again.GetCheckRunId() == lost.GetCheckRunId() {
				h.t.Fatalf("re-driven task = %v, want attempt 1 again, checking first", again)
			}
			h.wantRun(lost.GetCheckRunId(), runFailed, reasonTransient)
			if err := h.o.HandleResult(h.t.Context(), result(lost, statusSucceeded)); !ErrStale(err) {
				h.t.Errorf("the lost task's late answer: %v, want a stale message", err)
			}
			h.mustHandle(result(again, statusSucceeded))
			if rec := h.wantRun(id, runSucceeded, noReason); rec.GetRun().GetAttempt() != 1 || rec.GetRun().GetPlatformRetries() != 1 {
				h.t.Errorf("attempt %d platform retries %d, want 1 and 1", rec.GetRun().GetAttempt(), rec.GetRun().GetPlatformRetries())
			}
		}},
		{"a Run past its deadline", func(h *harness) string {
			return h.start(apiRequest(&latchkeyv1.RunOptions{Timeout: durationpb.New(time.Minute), Retries: 1})).GetId()
		}, time.Minute + time.Second, func(h *harness, id string) {
			h.takeTask(taskAPI)
			h.noTasks()
			if rec := h.wantRun(id, runFailed, reasonTimeout); !strings.Contains(rec.GetRun().GetFailureMessage(), "timeout") {
				h.t.Errorf("failure message %q", rec.GetRun().GetFailureMessage())
			}
		}},
		{"a wake-up that never came", func(h *harness) string {
			h.reg.edit(sessID, func(s *latchkeyv1.AuthSession) { s.State = sessRecreating })
			id := h.start(apiRequest(nil)).GetId()
			h.noTasks()
			if rec := h.record(id); rec.GetStage() != schedulerv1.Stage_STAGE_WAITING_SESSION {
				h.t.Fatalf("a Run on a RECREATING session is in stage %s, want WAITING_SESSION", rec.GetStage())
			}
			// Another replica's login ends; its event is lost.
			if _, err := h.reg.PutStorageState(h.t.Context(), putRequest("fresh", 1)); err != nil {
				h.t.Fatal(err)
			}
			h.reg.edit(sessID, func(s *latchkeyv1.AuthSession) { s.State = sessReady })
			h.reg.takeEvents()
			h.sweep() // not yet stuck: nothing happens
			h.noTasks()
			return id
		}, stuckAfter + time.Second, func(h *harness, id string) {
			task := h.takeTask(taskAPI)
			if task.GetRunId() != id || task.GetSession().GetStateRevision() != 2 || !task.GetCheckFirst() {
				h.t.Fatalf("woken task = %v, want the Run on revision 2", task)
			}
		}},
		{"a back-off whose redelivery never came", func(h *harness) string {
			run, _ := h.startFailingCheck(&latchkeyv1.RunOptions{CreateAttempts: proto.Int32(2)})
			create := h.takeTask(taskCreate)
			if retry := h.handle(failed(create, reasonTransient)); retry == nil {
				h.t.Fatal("no back-off")
			}
			return run.GetId()
		}, stuckAfter + time.Second, func(h *harness, id string) {
			if next := h.takeTask(taskCreate); next.GetAttempt() != 2 {
				h.t.Fatalf("re-driven login = %v, want attempt 2", next)
			}
			h.wantSession(sessID, sessRecreating, noReason)
		}},
		{"a check whose Run went on without it", func(h *harness) string {
			run := h.start(apiRequest(nil))
			h.mustHandle(result(h.takeTask(taskAPI), statusSucceeded))
			// A dispatch that lost its race (or a scheduler that died) left a child.
			orphan := &schedulerv1.RunRecord{Stage: schedulerv1.Stage_STAGE_DISPATCHED, Run: &latchkeyv1.Run{
				Id: "run-orphan-check", ProjectId: testProject, Kind: latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_VALIDATE,
				State: runRunning, ParentRunId: run.GetId(), AuthSessionId: sessID,
			}}
			if err := h.o.Store.Create(h.t.Context(), orphan); err != nil {
				h.t.Fatal(err)
			}
			return "run-orphan-check"
		}, stuckAfter + time.Second, func(h *harness, id string) {
			h.wantRun(id, runFailed, reasonTransient)
			h.noTasks()
		}},
		{"a Run stored but never dispatched", func(h *harness) string {
			rec := &schedulerv1.RunRecord{
				Deadline: timestamppb.New(h.clock.Now().Add(DefaultTimeout)),
				Run: &latchkeyv1.Run{
					Id: "run-orphan", ProjectId: testProject, Kind: latchkeyv1.RunKind_RUN_KIND_API, State: latchkeyv1.RunState_RUN_STATE_QUEUED,
					Api: apiName, AuthSessionId: sessID, BundleVersion: 3,
				},
			}
			if err := h.o.Store.Create(h.t.Context(), rec); err != nil {
				h.t.Fatal(err)
			}
			return "run-orphan"
		}, stuckAfter + time.Second, func(h *harness, id string) {
			if task := h.takeTask(taskAPI); task.GetRunId() != id || !task.GetCheckFirst() {
				h.t.Fatalf("task = %v, want the orphan's first attempt", task)
			}
			h.wantRun(id, runRunning, noReason)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.reg.add(sessID, typeCredentials, sessReady)
			id := tc.lose(h)
			h.clock.Advance(tc.wait)
			h.sweep()
			tc.then(h, id)
		})
	}
}

// TestSweepEndsTheCheckOfARunPastItsDeadline: a Run the sweep fails for its deadline
// must not leave its VALIDATE child RUNNING.
func TestSweepEndsTheCheckOfARunPastItsDeadline(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.add(sessID, typeCredentials, sessReady)
	run := h.start(apiRequest(&latchkeyv1.RunOptions{Timeout: durationpb.New(time.Minute)}))
	task := h.takeTask(taskAPI)
	h.clock.Advance(time.Minute + time.Second)
	h.sweep()
	h.wantRun(run.GetId(), runFailed, reasonTimeout)
	h.mustHandle(result(task, statusSucceeded)) // the runner's late answer
	if child := h.record(task.GetCheckRunId()).GetRun(); !domain.RunEnded(child.GetState()) {
		t.Fatalf("the VALIDATE child of a timed-out Run is %s", child.GetState())
	}
}

// TestDeadlineDuringALoginReleasesTheSession: a login whose Run reaches its deadline
// (the create Run inherits the deadline of the API Run, or of the refresh check, that
// started it) must not leave the session RECREATING: nothing would ever move it on,
// and every later Run on it would wait until its own deadline.
func TestDeadlineDuringALoginReleasesTheSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.add(sessID, typeCredentials, sessReady)
	run, _ := h.startFailingCheck(&latchkeyv1.RunOptions{Timeout: durationpb.New(time.Minute)})
	create := h.takeTask(taskCreate)
	h.clock.Advance(time.Minute + time.Second)
	h.sweep()
	h.wantRun(run.GetId(), runFailed, reasonTimeout)
	h.wantRun(create.GetRunId(), runFailed, reasonTimeout)
	if s := h.reg.get(sessID); s.GetState() == sessRecreating {
		t.Errorf("the session is still RECREATING after its login's Run ended")
	}
	if holder := h.leaseHolder(sessID); holder != "" {
		t.Errorf("the recreate lease is still held by the ended create Run %s", holder)
	}
	next := h.start(apiRequest(nil))
	if rec := h.record(next.GetId()); rec.GetStage() == schedulerv1.Stage_STAGE_WAITING_SESSION {
		t.Errorf("a new Run waits for a login that no longer runs")
	}
}
