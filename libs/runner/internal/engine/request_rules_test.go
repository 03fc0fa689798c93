package engine

import (
	"strings"
	"sync"
	"testing"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// TestRequestRules runs a cheap HTTP check with each invalidIf rule against the
// portal's logged-out patterns (/account: a 302 to the login page; /api/whoami: 200
// with an error body), logged in and after the portal dropped every session. Each
// rule tells the two apart; a failure names the rule, never the answer.
func TestRequestRules(t *testing.T) {
	t.Parallel()
	const (
		valid        = latchkeyv1.CheckOutcome_CHECK_OUTCOME_VALID
		invalid      = latchkeyv1.CheckOutcome_CHECK_OUTCOME_INVALID
		inconclusive = latchkeyv1.CheckOutcome_CHECK_OUTCOME_INCONCLUSIVE
	)
	account := `url: "{{ .Vars.baseURL }}/account"`
	whoami := `url: "{{ .Vars.baseURL }}/api/whoami"`
	tests := []struct {
		name              string
		step              string
		loggedIn, expired latchkeyv1.CheckOutcome
		rule, note        string // in the INVALID failure, in the expired check's note
	}{
		{"the status alone is fooled by a redirect", account, valid, valid, "", "answered 200 after a redirect"},
		{"redirectTo a path", account + `, invalidIf: { redirectTo: /login }`, valid, invalid, "invalidIf.redirectTo", "answered 200 after a redirect"},
		{"redirectTo a URL", account + `, invalidIf: { redirectTo: "{{ .Vars.baseURL }}/login" }`, valid, invalid, "invalidIf.redirectTo", ""},
		{"redirectTo elsewhere does not match", account + `, invalidIf: { redirectTo: /sso }`, valid, valid, "", ""},
		{"a redirect not followed", account + `, redirect: manual, invalidIf: { redirected: true }`, valid, invalid, "invalidIf.redirected", "answered with a redirect (not followed)"},
		{"body contains", account + `, invalidIf: { bodyContains: 'id="login-form"' }`, valid, invalid, "invalidIf.bodyContains", ""},
		{"body does not contain", account + `, invalidIf: { bodyNotContains: 'id="account-username"' }`, valid, invalid, "invalidIf.bodyNotContains", ""},
		{"the status alone is fooled by an error body", whoami, valid, valid, "", "answered 200"},
		{"json equals a string", whoami + `, invalidIf: { json: { path: error.code, equals: denied } }`, valid, invalid, "invalidIf.json (error.code equals)", ""},
		{"json equals false", whoami + `, invalidIf: { json: { path: success, equals: false } }`, valid, invalid, "invalidIf.json (success equals)", ""},
		{"json missing", whoami + `, invalidIf: { json: { path: user.username, missing: true } }`, valid, invalid, "invalidIf.json (user.username missing)", ""},
		{"json rules, the second matches", whoami + `, invalidIf: { json: [ { path: error.code, equals: expired }, { path: success, notEquals: true } ] }`, valid, invalid, "invalidIf.json[1] (success notEquals)", ""},
		{"json on a page that is not JSON cannot tell", account + `, invalidIf: { json: { path: success, equals: false } }`, inconclusive, inconclusive, "", ""},
	}
	r := newTestRunner(t, Config{}, nil, Deps{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, base := portaltest.Start(t, portal.Config{})
			b, err := recipe.Parse([]recipe.File{{Path: "check.yaml", Content: []byte(
				"apis:\n  auth-sessions/check:\n    steps:\n      - request: { " + tt.step + " }\n")}}, recipe.Options{})
			if err != nil {
				t.Fatal(err)
			}
			state := loggedInState(t, base, portal.User{Username: portal.AliceUsername, Password: portal.AlicePassword})
			check := func(want latchkeyv1.CheckOutcome) (*LocalResult, string) {
				t.Helper()
				var mu sync.Mutex
				var note string
				res, err := r.RunLocal(t.Context(), LocalRun{Bundle: b, API: recipe.CheckAPI, State: state, Vars: map[string]string{"baseURL": base},
					Observer: func(ev sdk.StepEvent) { mu.Lock(); note = ev.Note; mu.Unlock() }})
				if err != nil {
					t.Fatal(err)
				}
				if res.Outcome != want {
					t.Fatalf("check = %s (%v), want %s", res.Outcome, res.Failure, want)
				}
				mu.Lock()
				defer mu.Unlock()
				return res, note
			}
			check(tt.loggedIn)
			p.ExpireSessions()
			res, note := check(tt.expired)
			if tt.note != "" && !strings.HasPrefix(note, tt.note) {
				t.Errorf("note %q, want it to start with %q", note, tt.note)
			}
			if tt.expired != invalid {
				return
			}
			msg := res.Failure.Error()
			if !strings.Contains(msg, tt.rule+" matched: not logged in") || !strings.Contains(note, tt.rule+" matched") {
				t.Errorf("failure %q, note %q: want them to name %s", msg, note, tt.rule)
			}
			for _, body := range []string{"Sign in", "login-form", "denied", "csrf", "success\":"} {
				if strings.Contains(msg, body) || strings.Contains(note, body) {
					t.Errorf("failure %q or note %q quotes the answer (%q)", msg, note, body)
				}
			}
		})
	}
}
