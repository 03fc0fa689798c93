package interp

import (
	"errors"
	"testing"

	"github.com/latchkey/latchkey/libs/recipe"
)

func TestRedirectedTo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rule, final string
		want        bool
	}{
		{"/login", "https://a.test/login", true},
		{"/login", "https://a.test/login?next=%2Faccount", true},
		{"/login", "https://a.test/login/sso", true},
		{"/login", "https://a.test/logins", false},
		{"/login", "https://a.test/account", false},
		{"/login/", "https://a.test/login/x", true},
		{"/login/", "https://a.test/login", false},
		{"/", "https://a.test/anything", true},
		{"https://sso.test/auth", "https://sso.test/auth/start", true},
		{"https://sso.test/auth", "https://a.test/auth", false},
		{"https://sso.test", "https://sso.test/", true},
		{"http://a.test/login", "https://a.test/login", false},
	}
	for _, tt := range tests {
		if got := redirectedTo(tt.rule, tt.final); got != tt.want {
			t.Errorf("redirectedTo(%q, %q) = %v, want %v", tt.rule, tt.final, got, tt.want)
		}
	}
}

func TestMatchInvalidIf(t *testing.T) {
	t.Parallel()
	path := func(s string) recipe.JSONPath { p, _ := recipe.ParseJSONPath(s); return p }
	denied := recipe.JSONRule{Path: path("error.code"), Op: recipe.JSONEquals, Value: "denied"}
	tests := []struct {
		name    string
		rules   *recipe.InvalidIf
		res     requestResult
		want    string
		unknown bool // INCONCLUSIVE: the rules cannot tell
	}{
		{"no rules", nil, requestResult{Status: 200}, "", false},
		{"redirected, not followed", &recipe.InvalidIf{Redirected: true}, requestResult{Redirected: true, OpaqueRedirect: true}, "invalidIf.redirected", false},
		{"redirectTo needs a redirect", &recipe.InvalidIf{RedirectTo: "/login"}, requestResult{Status: 200, URL: "https://a.test/login"}, "", false},
		{"redirectTo", &recipe.InvalidIf{RedirectTo: "/login"}, requestResult{Status: 200, Redirected: true, URL: "https://a.test/login?next=x"}, "invalidIf.redirectTo", false},
		{"body contains", &recipe.InvalidIf{BodyContains: "Sign in"}, requestResult{Body: "<h1>Sign in</h1>"}, "invalidIf.bodyContains", false},
		{"body lacks", &recipe.InvalidIf{BodyNotContains: "Sign out"}, requestResult{Body: "<h1>Sign in</h1>"}, "invalidIf.bodyNotContains", false},
		{"json", &recipe.InvalidIf{JSON: []recipe.JSONRule{denied}}, requestResult{Body: `{"error":{"code":"denied"}}`}, "invalidIf.json (error.code equals)", false},
		{"json no match", &recipe.InvalidIf{JSON: []recipe.JSONRule{denied}}, requestResult{Body: `{"user":{}}`}, "", false},
		{"json on HTML", &recipe.InvalidIf{JSON: []recipe.JSONRule{denied}}, requestResult{Body: `<html>`}, "", true},
		{"a body rule decides before json can't", &recipe.InvalidIf{BodyContains: "html", JSON: []recipe.JSONRule{denied}}, requestResult{Body: `<html>`}, "invalidIf.bodyContains", false},
	}
	for _, tt := range tests {
		got, err := matchInvalidIf(tt.rules, tt.res)
		var se *stepError
		if got != tt.want || (err != nil) != tt.unknown || (err != nil && (!errors.As(err, &se) || se.outcome != outcomeInconclusive)) {
			t.Errorf("%s: %q, %v; want %q (cannot tell: %v)", tt.name, got, err, tt.want, tt.unknown)
		}
	}
}
