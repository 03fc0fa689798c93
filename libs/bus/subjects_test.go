package bus_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/libs/bus"
)

func TestValidToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		token string
		ok    bool
	}{
		{"proj_01HX", true},
		{"a-b=c/d", true},
		{"émoji-ok", true},
		{"", false},
		{"a.b", false},
		{"*", false},
		{"a>", false},
		{">", false},
		{"a b", false},
		{"a\tb", false},
		{"a\nb", false},
		{"a\u00a0b", false},
		{"a\x00b", false},
		{"\xff", false},
		{strings.Repeat("x", bus.MaxTokenLen), true},
		{strings.Repeat("x", bus.MaxTokenLen+1), false},
	}
	for _, tt := range tests {
		if got := bus.ValidToken(tt.token); got != tt.ok {
			t.Errorf("ValidToken(%q) = %v, want %v", tt.token, got, tt.ok)
		}
		err := bus.CheckToken(tt.token)
		if tt.ok != (err == nil) || (err != nil && !errors.Is(err, bus.ErrInvalidToken)) {
			t.Errorf("CheckToken(%q) = %v", tt.token, err)
		}
	}
}

func TestSubjects(t *testing.T) {
	t.Parallel()
	type build func(ids ...string) (string, error)
	one := func(f func(string) (string, error)) build {
		return func(ids ...string) (string, error) { return f(ids[0]) }
	}
	two := func(f func(string, string) (string, error)) build {
		return func(ids ...string) (string, error) { return f(ids[0], ids[1]) }
	}
	tests := []struct {
		name string
		f    build
		want string
	}{
		{"run request", one(bus.RunRequestSubject), "lk.runs.requests.A"},
		{"task", one(bus.TaskSubject), "lk.tasks.A"},
		{"result", one(bus.ResultSubject), "lk.results.A"},
		{"session event", two(bus.SessionEventSubject), "lk.events.session.A.B"},
		{"session events of project", one(bus.SessionEventsOfProject), "lk.events.session.A.*"},
		{"run event", two(bus.RunEventSubject), "lk.events.run.A.B"},
		{"run event (JSON)", two(bus.RunEventJSONSubject), "lk.events.json.run.A.B"},
		{"job event", two(bus.JobEventSubject), "lk.events.job.A.B"},
		{"audit", one(bus.AuditSubject), "lk.audit.A"},
		{"cancel", one(bus.CancelSubject), "lk.cancel.A"},
		{"resume", one(bus.ResumeSubject), "lk.resume.A"},
		{"live frames", one(bus.LiveFramesSubject), "lk.live.A.frames"},
		{"live input", one(bus.LiveInputSubject), "lk.live.A.input"},
		{"session key", two(bus.SessionKey), "A.B"},
		{"project key", two(bus.ProjectKey), "A.B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.f("A", "B")
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
			usesSecond := strings.Contains(tt.want, "B")
			for _, bad := range []string{"", "a.b", "*", ">", "a b"} {
				cases := [][]string{{bad, "B"}}
				if usesSecond {
					cases = append(cases, []string{"A", bad})
				}
				for _, ids := range cases {
					got, err := tt.f(ids...)
					if !errors.Is(err, bus.ErrInvalidToken) || got != "" {
						t.Errorf("f(%q) = %q, %v; want ErrInvalidToken", ids, got, err)
					}
				}
			}
		})
	}
}

func TestKeysUseKVAlphabet(t *testing.T) {
	t.Parallel()
	// Valid subject tokens that a KV key may not hold.
	for _, bad := range []string{"émoji", "a#b", "a:b"} {
		if _, err := bus.SessionKey("proj", bad); !errors.Is(err, bus.ErrInvalidToken) {
			t.Errorf("SessionKey(proj, %q): got %v, want ErrInvalidToken", bad, err)
		}
	}
}

func TestRunRequestProjectInvertsTheSubject(t *testing.T) {
	t.Parallel()
	subj, err := bus.RunRequestSubject("acme")
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := bus.RunRequestProject(subj); !ok || p != "acme" {
		t.Fatalf("RunRequestProject(%q) = %q, %v", subj, p, ok)
	}
	for _, bad := range []string{"lk.runs.requests.a.b", "lk.tasks.acme", "lk.runs.requests."} {
		if p, ok := bus.RunRequestProject(bad); ok {
			t.Errorf("RunRequestProject(%q) = %q, want not a run request", bad, p)
		}
	}
	if a, b := bus.WarmSubject("default", "s1"), bus.WarmSubject("default", "s2"); a == b || strings.Contains(a, "s1") {
		t.Fatalf("warm subjects %q and %q: want distinct, without the session id", a, b)
	}
}

// The login lane is a subject of LK_TASKS of its own, which the pool's API consumer
// (filtered on the exact pool subject) never receives.
func TestLoginLaneIsApart(t *testing.T) {
	t.Parallel()
	api, err := bus.TaskSubject("default")
	if err != nil {
		t.Fatal(err)
	}
	login, err := bus.LoginTaskSubject("default")
	if err != nil {
		t.Fatal(err)
	}
	if login == api || !strings.HasPrefix(login, "lk.tasks.") {
		t.Fatalf("login lane %q, API lane %q: want a distinct subject under lk.tasks.", login, api)
	}
	if _, err := bus.LoginTaskSubject("a.b"); err == nil {
		t.Fatal("a pool with a dot made a login subject")
	}
	if s, err := bus.StaleStateSubject("default"); err != nil || s != "lk.runner.default.stale" {
		t.Fatalf("StaleStateSubject = %q, %v", s, err)
	}
}
