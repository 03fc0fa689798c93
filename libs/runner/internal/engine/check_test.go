package engine

import (
	"net/http"
	"testing"
	"time"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
)

const project = "proj1"

// TestCheck restores a stored state into a new context and runs the portal's check:
// a live session is VALID (and the rotated cookie is captured), an expired one
// INVALID, a portal that is down INCONCLUSIVE.
func TestCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		breakIt func(p *portal.Portal)
		outcome latchkeyv1.CheckOutcome
		status  runnerv1.TaskStatus
	}{
		{"valid", func(*portal.Portal) {}, outcomeValid, statusSucceeded},
		{"expired session", func(p *portal.Portal) { p.ExpireSessions() }, outcomeInvalid, statusSucceeded},
		{"portal down", func(p *portal.Portal) { p.SetFault(portal.Fault{Down: true}) }, outcomeInconclusive, statusInconclusive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, base := portaltest.Start(t, portal.Config{})
			b := newTestBackend(t, portalBundle(t))
			b.vars[project+"/s1"] = map[string]string{"baseURL": base}
			st := loggedInState(t, base, portal.User{Username: portal.AliceUsername, Password: portal.AlicePassword})
			b.putState(t, project, "s1", 1, st)
			tt.breakIt(p)
			r := newTestRunner(t, Config{}, b, Deps{})
			res := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_CHECK, recipe.CheckAPI, project, "s1", 1, nil))
			if res.GetCheckOutcome() != tt.outcome || res.GetStatus() != tt.status {
				t.Fatalf("check = %s / %s (%s), want %s / %s", res.GetStatus(), res.GetCheckOutcome(), res.GetFailureMessage(), tt.status, tt.outcome)
			}
			if res.GetBaseStateRevision() != 1 {
				t.Errorf("base revision %d, want 1", res.GetBaseStateRevision())
			}
			if tt.outcome != outcomeValid {
				if len(res.GetCapturedStateCiphertext()) != 0 && tt.outcome == outcomeInvalid {
					t.Error("an INVALID check handed back a state")
				}
				return
			}
			// The portal rotated the session cookie on /api/me: the new value is
			// captured and works, the HttpOnly flag and the localStorage token survive.
			if len(res.GetCapturedStateCiphertext()) == 0 {
				t.Fatal("no captured state after the cookie rotated")
			}
			got := b.openState(t, project, "s1", res.GetCapturedStateCiphertext())
			old, rotated := cookieValue(st, portal.SessionCookie), cookieValue(got, portal.SessionCookie)
			if rotated == "" || rotated == old {
				t.Fatalf("captured session cookie %q, want a rotated value", rotated)
			}
			if code, body := apiMe(t, base, rotated); code != http.StatusOK {
				t.Errorf("the captured cookie does not log in: %d %s", code, body)
			}
			for _, c := range got.GetCookies() {
				if c.GetName() == portal.SessionCookie && (!c.GetHttpOnly() || c.GetExpires() <= float64(time.Now().Unix())) {
					t.Errorf("captured session cookie lost its attributes: httpOnly %v expires %v", c.GetHttpOnly(), c.GetExpires())
				}
			}
			if len(got.GetOrigins()) != 1 || got.GetOrigins()[0].GetOrigin() != base || len(got.GetOrigins()[0].GetLocalStorage()) != 1 {
				t.Errorf("captured origins %v, want the portal's token", got.GetOrigins())
			}
			if len(res.GetOrigins()) != 1 || res.GetOrigins()[0] != base {
				t.Errorf("result origins %v, want [%s]", res.GetOrigins(), base)
			}
			if res.GetEarliestCookieExpiry() == nil {
				t.Error("no earliest cookie expiry")
			}
			if len(b.opens) == 0 || b.opens[0] != "storage_state:run:"+res.GetRunId() {
				t.Errorf("vault opens %v, want the state opened for the run", b.opens)
			}
		})
	}
}

// TestCreate logs in through the portal's create recipe: a password user, a TOTP user,
// a wrong password (INVALID_CREDENTIALS, never retried) and a rate-limited login page.
func TestCreate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		creds  map[string]string
		fault  portal.Fault
		status runnerv1.TaskStatus
		reason latchkeyv1.FailureReason
	}{
		{"password", map[string]string{"username": "alice", "password": portal.AlicePassword}, portal.Fault{}, statusSucceeded, 0},
		{"totp", map[string]string{"username": "bob", "password": portal.BobPassword, "totp_secret": portal.BobTOTPSecret}, portal.Fault{}, statusSucceeded, 0},
		{"wrong password", map[string]string{"username": "alice", "password": "nope"}, portal.Fault{}, statusFailed, latchkeyv1.FailureReason_FAILURE_REASON_INVALID_CREDENTIALS},
		{"rate limited", map[string]string{"username": "alice", "password": portal.AlicePassword}, portal.Fault{TooManyRequests: 5}, statusFailed, reasonRateLimited},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, base := portaltest.Start(t, portal.Config{})
			p.SetFault(tt.fault)
			b := newTestBackend(t, portalBundle(t))
			b.vars[project+"/s1"] = map[string]string{"baseURL": base}
			b.secrets[project+"/session-s1"] = tt.creds
			logs := &logBuffer{}
			tp, spans := newTracer(t)
			r := newTestRunner(t, Config{}, b, Deps{Logger: slogJSON(logs), Tracer: tp})
			tk := task(runnerv1.TaskKind_TASK_KIND_CREATE, recipe.CreateAPI, project, "s1", 0, nil)
			tk.Credentials = &runnerv1.CredentialsRef{Source: &runnerv1.CredentialsRef_SecretId{SecretId: "session-s1"}}
			res := r.Execute(t.Context(), tk)
			if res.GetStatus() != tt.status || res.GetFailureReason() != tt.reason {
				t.Fatalf("create = %s %s (%s), want %s %s", res.GetStatus(), res.GetFailureReason(), res.GetFailureMessage(), tt.status, tt.reason)
			}
			kinds := map[string]bool{}
			for _, sp := range spans.Ended() {
				kinds[sp.Name()] = true
				for _, a := range sp.Attributes() {
					for _, v := range tt.creds {
						if contains(a.Value.Emit(), v) {
							t.Errorf("span %s attribute %s carries a credential", sp.Name(), a.Key)
						}
					}
				}
			}
			want := []string{"goto", "api auth-sessions/create"}
			if tt.fault == (portal.Fault{}) {
				want = append(want, "fill", "click", "waitVisible")
			}
			for _, k := range want {
				if !kinds[k] {
					t.Errorf("no %q span among %v", k, kinds)
				}
			}
			for _, v := range tt.creds {
				if contains(res.GetFailureMessage(), v) || contains(logs.String(), v) {
					t.Errorf("a credential appears in the failure message or the logs")
				}
			}
			if tt.status != statusSucceeded {
				if res.GetFailedStep() == nil || res.GetFailedStep().GetFile() == "" || res.GetFailedStep().GetKind() == "" {
					t.Errorf("failed step %v, want file, index and kind", res.GetFailedStep())
				}
				return
			}
			st := b.openState(t, project, "s1", res.GetCapturedStateCiphertext())
			if code, body := apiMe(t, base, cookieValue(st, portal.SessionCookie)); code != http.StatusOK || !contains(body, tt.creds["username"]) {
				t.Errorf("the captured state does not log %s in: %d %s", tt.creds["username"], code, body)
			}
			if len(st.GetOrigins()) != 1 {
				t.Errorf("captured origins %v, want the portal's localStorage token", st.GetOrigins())
			}
		})
	}
}
