// Package bus holds the NATS and JetStream helpers every Latchkey service
// shares: the names of all subjects, streams and buckets (this file names each
// one exactly once), an embedded server for `latchkey dev` and tests, a
// connection helper, idempotent declaration of streams and buckets, and W3C
// trace-context propagation in message headers.
package bus

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrInvalidToken is returned when an id cannot be used as one token of a
// NATS subject or KV key: it is empty, too long, or holds '.', '*', '>',
// whitespace or a control character.
var ErrInvalidToken = errors.New("invalid subject token")

// MaxTokenLen is the longest id accepted as a subject token.
const MaxTokenLen = 256

// Stream names (DESIGN.md section 4).
const (
	StreamRuns    = "LK_RUNS"
	StreamTasks   = "LK_TASKS"
	StreamResults = "LK_RESULTS"
	StreamEvents  = "LK_EVENTS"
	StreamAudit   = "LK_AUDIT"
)

// Subjects captured by each stream, usable as consumer filters.
const (
	SubjectRunRequestsAll  = "lk.runs.requests.>"
	SubjectTasksAll        = "lk.tasks.>"
	SubjectResultsAll      = "lk.results.>"
	SubjectEventsAll       = "lk.events.>"
	SubjectSessionEventAll = "lk.events.session.>"
	SubjectRunEventAll     = "lk.events.run.>"
	SubjectJobEventAll     = "lk.events.job.>"
	SubjectAuditAll        = "lk.audit.>"
)

// Core NATS (not persisted) subject wildcards.
const (
	SubjectCancelAll = "lk.cancel.*"
	SubjectResumeAll = "lk.resume.*"
	SubjectLiveAll   = "lk.live.>"
)

// KV bucket names. BucketRuns shares its name with StreamRuns; JetStream
// stores the bucket in the stream KV_LK_RUNS, so they do not collide.
const (
	BucketProjects    = "LK_PROJECTS"
	BucketAPIKeys     = "LK_APIKEYS"
	BucketAutomations = "LK_AUTOMATIONS"
	BucketSessions    = "LK_SESSIONS"
	BucketStates      = "LK_STATES"
	BucketSecrets     = "LK_SECRETS"
	BucketRuns        = "LK_RUNS"
	BucketJobs        = "LK_JOBS"
	BucketLeases      = "LK_LEASES"
	BucketRecordings  = "LK_RECORDINGS"
	// BucketTOTP holds the last TOTP time step each session used per secret, so no
	// two logins send one code, whichever runners they run on.
	BucketTOTP = "LK_TOTP"
)

// Object store bucket names.
const (
	ObjectStates    = "LK_STATES_OBJ"
	ObjectArtifacts = "LK_ARTIFACTS"
)

// Header names carried by Latchkey messages.
const (
	// HeaderMsgID is JetStream's de-duplication header.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderContentType says how a public message is encoded: ContentTypeJSON
	// (protojson) or ContentTypeProtobuf, the default.
	HeaderContentType = "Content-Type"
	// HeaderAccept on a run request asks for the Run's events in ContentTypeJSON too.
	HeaderAccept = "Accept"

	ContentTypeJSON     = "application/json"
	ContentTypeProtobuf = "application/protobuf"
)

// ValidToken reports whether s can be used as one token of a subject or as
// one dot-separated part of a KV key.
func ValidToken(s string) bool {
	return CheckToken(s) == nil
}

// CheckToken returns nil if s is a valid subject token, or an error wrapping
// ErrInvalidToken that says what is wrong with it.
func CheckToken(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty: %w", ErrInvalidToken)
	case len(s) > MaxTokenLen:
		return fmt.Errorf("longer than %d bytes: %w", MaxTokenLen, ErrInvalidToken)
	case !utf8.ValidString(s):
		return fmt.Errorf("not valid UTF-8: %w", ErrInvalidToken)
	}
	for _, r := range s {
		switch {
		case r == '.' || r == '*' || r == '>':
			return fmt.Errorf("%q contains %q: %w", s, r, ErrInvalidToken)
		case unicode.IsSpace(r) || unicode.IsControl(r):
			return fmt.Errorf("%q contains whitespace or a control character: %w", s, ErrInvalidToken)
		}
	}
	return nil
}

// RunRequestSubject is the LK_RUNS subject for run requests of a project.
func RunRequestSubject(project string) (string, error) {
	return join("run request", "lk.runs.requests", part{"project", project})
}

// RunRequestProject returns the project a run request subject names.
func RunRequestProject(subject string) (string, bool) {
	project, ok := strings.CutPrefix(subject, "lk.runs.requests.")
	return project, ok && ValidToken(project)
}

// WarmSubject is the core NATS subject where the runners holding a warm browser
// context of a session (hashed: the id stays off the wire) listen for its tasks.
func WarmSubject(pool, session string) string {
	sum := sha256.Sum256([]byte(session))
	return "lk.runner." + pool + ".warm." + hex.EncodeToString(sum[:16])
}

// TaskSubject is the LK_TASKS subject for tasks of a runner pool.
func TaskSubject(pool string) (string, error) {
	return join("task", "lk.tasks", part{"pool", pool})
}

// LoginTaskSubject is the LK_TASKS subject of a runner pool's login lane: the tasks
// that log a session in (CREATE) and verify the state a login captured (CHECK of a
// candidate). Runners serve it with capacity of its own, so a login never queues
// behind the API work that waits for it.
func LoginTaskSubject(pool string) (string, error) {
	s, err := TaskSubject(pool)
	if err != nil {
		return "", err
	}
	return s + ".login", nil
}

// StaleStateSubject is the core NATS subject where the runners of a pool tell each
// other that a session's state revision was found logged out, so the checks still
// queued for it are answered without a browser.
func StaleStateSubject(pool string) (string, error) {
	s, err := join("stale state", "lk.runner", part{"pool", pool})
	if err != nil {
		return "", err
	}
	return s + ".stale", nil
}

// ResultSubject is the LK_RESULTS subject for task results of a Run.
func ResultSubject(run string) (string, error) {
	return join("result", "lk.results", part{"run", run})
}

// SessionEventSubject is the LK_EVENTS subject for state changes of an
// AuthSession.
func SessionEventSubject(project, session string) (string, error) {
	return join("session event", "lk.events.session", part{"project", project}, part{"session", session})
}

// SessionEventsOfProject is the LK_EVENTS filter for all session events of a
// project.
func SessionEventsOfProject(project string) (string, error) {
	s, err := join("session event filter", "lk.events.session", part{"project", project})
	if err != nil {
		return "", err
	}
	return s + ".*", nil
}

// RunEventSubject is the LK_EVENTS subject for state changes of a Run.
func RunEventSubject(project, run string) (string, error) {
	return join("run event", "lk.events.run", part{"project", project}, part{"run", run})
}

// RunEventJSONSubject is the LK_EVENTS subject on which the events of a Run asked for
// in JSON are mirrored as protojson (latchkey.events.v1.RunEvent).
func RunEventJSONSubject(project, run string) (string, error) {
	return join("run event (JSON)", "lk.events.json.run", part{"project", project}, part{"run", run})
}

// JobEventSubject is the LK_EVENTS subject for state changes of a Job.
func JobEventSubject(project, job string) (string, error) {
	return join("job event", "lk.events.job", part{"project", project}, part{"job", job})
}

// AuditSubject is the LK_AUDIT subject for audit records of a project.
func AuditSubject(project string) (string, error) {
	return join("audit", "lk.audit", part{"project", project})
}

// CancelSubject is the core NATS subject that aborts a running task of a Run.
func CancelSubject(run string) (string, error) {
	return join("cancel", "lk.cancel", part{"run", run})
}

// ResumeSubject is the core NATS subject on which ResumeRun's answers reach the runner
// holding a Run's browser context (a latchkey.runner.v1.TaskResume).
func ResumeSubject(run string) (string, error) {
	return join("resume", "lk.resume", part{"run", run})
}

// LiveFramesSubject is the core NATS subject carrying screencast frames of a
// recording.
func LiveFramesSubject(recording string) (string, error) {
	s, err := join("live frames", "lk.live", part{"recording", recording})
	if err != nil {
		return "", err
	}
	return s + ".frames", nil
}

// LiveInputSubject is the core NATS subject carrying a person's clicks and
// keys back to the browser of a recording.
func LiveInputSubject(recording string) (string, error) {
	s, err := join("live input", "lk.live", part{"recording", recording})
	if err != nil {
		return "", err
	}
	return s + ".input", nil
}

// SessionKey is the LK_SESSIONS key of an AuthSession, `<project>.<session>`.
// Besides being valid tokens, both ids must only use the characters a KV key
// allows (letters, digits, '-', '_', '=', '/').
func SessionKey(project, session string) (string, error) {
	return ProjectKey(project, session)
}

// ProjectKey is a KV key `<project>.<id>` for a record that belongs to a
// project, for buckets keyed that way (LK_SESSIONS, LK_RUNS, LK_JOBS, ...).
func ProjectKey(project, id string) (string, error) {
	for _, p := range []part{{"project", project}, {"id", id}} {
		if err := checkKeyToken(p.value); err != nil {
			return "", fmt.Errorf("building key: %s: %w", p.name, err)
		}
	}
	return project + "." + id, nil
}

// checkKeyToken checks a token for use in a KV key, whose alphabet is
// narrower than a subject's.
func checkKeyToken(s string) error {
	if err := CheckToken(s); err != nil {
		return err
	}
	for _, r := range s {
		ok := r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' ||
			r >= '0' && r <= '9' || strings.ContainsRune("-_=/", r))
		if !ok {
			return fmt.Errorf("%q contains %q, not allowed in a KV key: %w", s, r, ErrInvalidToken)
		}
	}
	return nil
}

type part struct{ name, value string }

// join builds prefix.token1.token2..., checking every token.
func join(what, prefix string, parts ...part) (string, error) {
	var b strings.Builder
	b.WriteString(prefix)
	for _, p := range parts {
		if err := CheckToken(p.value); err != nil {
			return "", fmt.Errorf("building %s subject: %s: %w", what, p.name, err)
		}
		b.WriteByte('.')
		b.WriteString(p.value)
	}
	return b.String(), nil
}

// RunRecordKey is the key of a Run's record in the LK_RUNS bucket (a
// latchkey.scheduler.v1.RunRecord). The scheduler owns it; a runner reads it only to
// tell whether a task JetStream delivered again is still awaited.
func RunRecordKey(project, run string) string { return "run." + project + "." + run }
