package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/latchkey/latchkey/libs/bus"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
)

// When a site logs a session out while many of its Runs are queued, every queued
// task carries the same state revision, and every check of it would open a browser
// context to find out, again, that it is logged out. The first check that finds a
// revision logged out marks it here and tells the pool's other runners
// (bus.StaleStateSubject); checks of a marked revision are answered INVALID without a
// browser. A newer revision (the login's) is never marked by an older one, and marks
// are forgotten after staleFor, so a mark can cost at most one login that a check
// would have found unnecessary.

// staleFor is how long a revision found logged out stays marked.
const staleFor = 10 * time.Minute

// staleStates holds, per session (a digest of project and session, the key that
// travels between runners), the newest revision found logged out.
type staleStates struct {
	mu sync.Mutex
	m  map[string]staleMark
}

type staleMark struct {
	rev int64
	at  time.Time
}

func newStaleStates() *staleStates { return &staleStates{m: map[string]staleMark{}} }

// sessionDigest names a session without its ids, on the wire and in the map.
func sessionDigest(project, session string) string {
	sum := sha256.Sum256([]byte(project + "/" + session))
	return hex.EncodeToString(sum[:16])
}

// mark records that rev of the session was found logged out.
func (s *staleStates) mark(digest string, rev int64, now time.Time) {
	if rev <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.m[digest]; !ok || rev >= m.rev || now.Sub(m.at) > staleFor {
		s.m[digest] = staleMark{rev: rev, at: now}
	}
	for k, m := range s.m { // the map holds a few sessions; keep it that way
		if now.Sub(m.at) > staleFor {
			delete(s.m, k)
		}
	}
}

// known reports whether rev of the session is known to be logged out.
func (s *staleStates) known(digest string, rev int64, now time.Time) bool {
	if rev <= 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.m[digest]
	return ok && rev <= m.rev && now.Sub(m.at) <= staleFor
}

// staleCheck reports whether a task checks a session's stored state: an API with
// check_first, or a check of the session (not of a login's candidate state).
func staleCheck(t *runnerv1.RunnerTask) bool {
	if t.GetSession().GetAuthSessionId() == "" || t.GetSession().GetStateRevision() <= 0 || len(t.GetCandidateStateCiphertext()) > 0 {
		return false
	}
	switch t.GetKind() {
	case runnerv1.TaskKind_TASK_KIND_API:
		return t.GetCheckFirst()
	case runnerv1.TaskKind_TASK_KIND_CHECK:
		return !t.GetFreshContext()
	}
	return false
}

// knownStale reports whether the state a task would check is known to be logged out.
func (r *Runner) knownStale(t *runnerv1.RunnerTask) bool {
	return staleCheck(t) && r.stale.known(sessionDigest(t.GetProjectId(), t.GetSession().GetAuthSessionId()), t.GetSession().GetStateRevision(), time.Now())
}

// markStale records that the state a task checked is logged out and tells the pool.
func (r *Runner) markStale(t *runnerv1.RunnerTask) {
	if !staleCheck(t) {
		return
	}
	digest, rev := sessionDigest(t.GetProjectId(), t.GetSession().GetAuthSessionId()), t.GetSession().GetStateRevision()
	r.stale.mark(digest, rev, time.Now())
	r.mu.Lock()
	nc := r.nc
	r.mu.Unlock()
	if nc == nil {
		return
	}
	if subj, err := bus.StaleStateSubject(r.cfg.Pool); err == nil {
		_ = nc.Publish(subj, []byte(digest+" "+strconv.FormatInt(rev, 10)))
	}
}

// onStale records another runner's finding.
func (r *Runner) onStale(m *nats.Msg) {
	digest, rev, ok := strings.Cut(string(m.Data), " ")
	if !ok || len(digest) != 32 {
		return
	}
	if n, err := strconv.ParseInt(rev, 10, 64); err == nil {
		r.stale.mark(digest, n, time.Now())
	}
}
