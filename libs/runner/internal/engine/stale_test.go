package engine

import (
	"testing"
	"time"

	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
)

func TestStaleStatesKeepTheNewestRevisionFoundLoggedOut(t *testing.T) {
	t.Parallel()
	s := newStaleStates()
	now := time.Now()
	a, b := sessionDigest("acme", "s1"), sessionDigest("acme", "s2")
	s.mark(a, 3, now)
	for _, tc := range []struct {
		digest string
		rev    int64
		want   bool
	}{
		{a, 3, true},  // the revision found logged out
		{a, 2, true},  // an older one is older still
		{a, 4, false}, // a newer one (the login's) is not
		{b, 3, false}, // another session
		{a, 0, false}, // no revision: nothing to know
	} {
		if got := s.known(tc.digest, tc.rev, now); got != tc.want {
			t.Errorf("known(rev %d of %s) = %v, want %v", tc.rev, tc.digest[:6], got, tc.want)
		}
	}
	s.mark(a, 2, now) // a late, older finding does not hide the newer one
	if !s.known(a, 3, now) {
		t.Error("an older mark replaced a newer one")
	}
	if s.known(a, 3, now.Add(staleFor+time.Second)) {
		t.Error("a mark outlived staleFor")
	}
	s.mark(b, 1, now.Add(staleFor+time.Second)) // marking prunes expired marks
	if _, ok := s.m[a]; ok {
		t.Error("an expired mark was kept")
	}
}

// Only checks of a session's stored state can be answered from a mark: never a login,
// the verification of a login's candidate, or an API that does not check first.
func TestStaleCheckOnlyForStoredStates(t *testing.T) {
	t.Parallel()
	sess := &runnerv1.SessionRef{AuthSessionId: "s1", StateRevision: 3}
	for _, tc := range []struct {
		name string
		task *runnerv1.RunnerTask
		want bool
	}{
		{"API checking first", &runnerv1.RunnerTask{Kind: runnerv1.TaskKind_TASK_KIND_API, CheckFirst: true, Session: sess}, true},
		{"API without check", &runnerv1.RunnerTask{Kind: runnerv1.TaskKind_TASK_KIND_API, Session: sess}, false},
		{"refresh check", &runnerv1.RunnerTask{Kind: runnerv1.TaskKind_TASK_KIND_CHECK, Session: sess}, true},
		{"candidate check", &runnerv1.RunnerTask{Kind: runnerv1.TaskKind_TASK_KIND_CHECK, Session: sess, FreshContext: true, CandidateStateCiphertext: []byte("x")}, false},
		{"create", &runnerv1.RunnerTask{Kind: runnerv1.TaskKind_TASK_KIND_CREATE, Session: sess}, false},
		{"sessionless", &runnerv1.RunnerTask{Kind: runnerv1.TaskKind_TASK_KIND_API, CheckFirst: true}, false},
	} {
		if got := staleCheck(tc.task); got != tc.want {
			t.Errorf("%s: staleCheck = %v, want %v", tc.name, got, tc.want)
		}
	}
}
