package orch

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// TestProactiveRefresh: "the scheduler validates active sessions before they
// expire" — a due session gets one standalone VALIDATE Run and its CHECK task; VALID
// schedules the next check, INVALID logs a CREDENTIALS session in again through the
// same lease as a Run would, expires a RECORDER session and leaves a RUNTIME one for a
// Run that brings credentials; INCONCLUSIVE changes nothing.
func TestProactiveRefresh(t *testing.T) {
	t.Parallel()
	const keepAlive = 10 * time.Minute
	cases := []struct {
		name      string
		typ       latchkeyv1.SessionType
		outcome   latchkeyv1.CheckOutcome
		wantRun   latchkeyv1.RunState
		wantWhy   latchkeyv1.FailureReason
		wantState latchkeyv1.SessionState
		wantLogin bool
	}{
		{"valid", typeCredentials, valid, runSucceeded, noReason, sessReady, false},
		{"inconclusive", typeCredentials, inconclusive, runFailed, reasonTransient, sessReady, false},
		{"invalid, CREDENTIALS", typeCredentials, invalidState, runFailed, reasonExpired, sessRecreating, true},
		{"invalid, RECORDER", typeRecorder, invalidState, runFailed, reasonExpired, sessExpired, false},
		{"invalid, RUNTIME", typeRuntime, invalidState, runFailed, reasonExpired, sessReady, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.reg.add(sessID, tc.typ, sessReady)
			h.reg.edit(sessID, func(s *latchkeyv1.AuthSession) {
				s.NextRefreshTime = timestamppb.New(h.clock.Now().Add(-time.Second))
				s.Refresh = &latchkeyv1.RefreshSettings{KeepAliveInterval: durationpb.New(keepAlive)}
			})
			if _, err := h.o.Refresh(t.Context()); err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			check := h.takeTask(taskCheck)
			if check.GetSession().GetAuthSessionId() != sessID || check.GetSession().GetStateRevision() != 1 || check.GetFreshContext() || check.GetCheckFirst() {
				t.Fatalf("refresh task = %v, want a check of revision 1 in the session's context", check)
			}
			if run := h.wantRun(check.GetRunId(), runRunning, noReason).GetRun(); run.GetKind() != latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_VALIDATE {
				t.Fatalf("refresh Run = %v, want AUTHSESSION_VALIDATE", run)
			}
			// Another round within the interval checks nothing twice.
			if _, err := h.o.Refresh(t.Context()); err != nil {
				t.Fatalf("second Refresh: %v", err)
			}
			h.noTasks()

			h.clock.Advance(time.Second)
			h.mustHandle(checked(check, tc.outcome))
			h.wantRun(check.GetRunId(), tc.wantRun, tc.wantWhy)
			sess := h.reg.get(sessID)
			if sess.GetState() != tc.wantState {
				t.Errorf("session is %s, want %s", sess.GetState(), tc.wantState)
			}
			if tc.wantLogin {
				if create := h.takeTask(taskCreate); h.leaseHolder(sessID) != create.GetRunId() {
					t.Errorf("the refresh's login does not hold the lease")
				}
			} else {
				h.noTasks()
			}
			if tc.outcome == valid {
				next := sess.GetNextRefreshTime().AsTime().Sub(h.clock.Now())
				if !sess.GetLastValidateTime().AsTime().Equal(h.clock.Now()) || next < keepAlive*9/10 || next > keepAlive*11/10 {
					t.Errorf("validated at %v, next refresh in %s; want now and the keep-alive ±10%%", sess.GetLastValidateTime().AsTime(), next)
				}
			}
		})
	}
}
