package recipe_test

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/latchkey/latchkey/libs/recipe"
)

// TestRequestRulesParse: every invalidIf rule, redirect and the click and press
// options come out of the YAML as written.
func TestRequestRulesParse(t *testing.T) {
	t.Parallel()
	src := `apis:
  auth-sessions/check:
    steps:
      - request:
          url: "{{ .Vars.baseURL }}/account"
          redirect: follow
          invalidIf:
            redirectTo: /login
            bodyContains: "Sign in"
            bodyNotContains: "Sign out"
            json:
              - { path: error.code, equals: denied }
              - { path: success, equals: false }
              - { path: user.id, missing: true }
              - { path: items.0.n, notEquals: 3 }
              - { path: x, equals: null }
      - request: { url: "https://example.test/api", redirect: manual, invalidIf: { redirected: true, json: { path: ok, notEquals: true } } }
      - click: { selector: "#go", noWaitAfter: true }
      - press: { key: Enter, selector: "#q", noWaitAfter: true }
`
	b, err := recipe.Parse([]recipe.File{{Path: "c.yaml", Content: []byte(src)}}, recipe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	steps := b.APIs[recipe.CheckAPI].Steps
	r := steps[0].InvalidIf
	if steps[0].Redirect != recipe.RedirectFollow || r.RedirectTo != "/login" || r.BodyContains != "Sign in" || r.BodyNotContains != "Sign out" || r.Redirected {
		t.Errorf("first request = %+v, rules %+v", steps[0], r)
	}
	type rule struct {
		Path, Op string
		Value    any
	}
	var got []rule
	for _, j := range r.JSON {
		got = append(got, rule{j.Path.String(), j.Op, j.Value})
	}
	want := []rule{{"error.code", "equals", "denied"}, {"success", "equals", false}, {"user.id", "missing", nil}, {"items.0.n", "notEquals", 3.0}, {"x", "equals", nil}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("json rules (-want +got):\n%s", diff)
	}
	if s := steps[1]; s.Redirect != recipe.RedirectManual || !s.InvalidIf.Redirected || len(s.InvalidIf.JSON) != 1 || s.InvalidIf.JSON[0].Op != recipe.JSONNotEquals {
		t.Errorf("second request = %+v, rules %+v", s, s.InvalidIf)
	}
	if !steps[2].NoWaitAfter || !steps[3].NoWaitAfter {
		t.Errorf("noWaitAfter lost: %+v %+v", steps[2], steps[3])
	}
}

// TestRetryParses: a retry names an earlier step and needs a condition.
func TestRetryParses(t *testing.T) {
	t.Parallel()
	src := `apis:
  auth-sessions/create:
    steps:
      - totp: { secret: "{{ .Credentials.totp_secret }}", as: code, name: code }
      - fill: { selector: "#totp", value: "{{ .Vars.code }}" }
      - retry: code
        when: { selector: "#login-error", contains: "Invalid code" }
`
	b, err := recipe.Parse([]recipe.File{{Path: "c.yaml", Content: []byte(src)}}, recipe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	api := b.APIs[recipe.CreateAPI]
	s := api.Steps[2]
	if s.Kind != recipe.Retry || s.From != "code" || s.When == nil || s.When.Contains != "Invalid code" || api.RetryTarget(s) != 0 {
		t.Errorf("retry = %+v (target %d)", s, api.RetryTarget(s))
	}
}

func TestJSONPathLookup(t *testing.T) {
	t.Parallel()
	var doc any
	if err := json.Unmarshal([]byte(`{"error":{"code":"denied"},"success":false,"items":[{"id":1},{"id":2}],"n":null,"a.b":1}`), &doc); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path  string
		want  any
		found bool
	}{
		{"error.code", "denied", true},
		{"success", false, true},
		{"items.1.id", 2.0, true},
		{"n", nil, true},
		{"items.2.id", nil, false},
		{"items.01", nil, false},
		{"items.-1", nil, false},
		{"error.code.more", nil, false},
		{"missing", nil, false},
		{"a.b", nil, false}, // a key with a dot cannot be named
	}
	for _, tt := range tests {
		p, err := recipe.ParseJSONPath(tt.path)
		if err != nil {
			t.Fatalf("%s: %v", tt.path, err)
		}
		got, found := p.Lookup(doc)
		if found != tt.found || !cmp.Equal(got, tt.want) {
			t.Errorf("%s = %v, %v; want %v, %v", tt.path, got, found, tt.want, tt.found)
		}
	}
	for _, bad := range []string{"", ".a", "a..b", "a.", "a[0]", "$.a", "a b"} {
		if _, err := recipe.ParseJSONPath(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestJSONRuleMatches(t *testing.T) {
	t.Parallel()
	var doc any
	_ = json.Unmarshal([]byte(`{"success":false,"code":"denied","n":3,"obj":{"a":1},"nil":null}`), &doc)
	rule := func(path, op string, v any) recipe.JSONRule {
		p, _ := recipe.ParseJSONPath(path)
		return recipe.JSONRule{Path: p, Op: op, Value: v}
	}
	tests := []struct {
		r    recipe.JSONRule
		want bool
	}{
		{rule("success", recipe.JSONEquals, false), true},
		{rule("success", recipe.JSONEquals, "false"), false}, // typed: a string is not a bool
		{rule("code", recipe.JSONEquals, "denied"), true},
		{rule("n", recipe.JSONEquals, 3.0), true},
		{rule("obj", recipe.JSONEquals, nil), false},
		{rule("nil", recipe.JSONEquals, nil), true},
		{rule("absent", recipe.JSONEquals, nil), false},
		{rule("success", recipe.JSONNotEquals, true), true},
		{rule("absent", recipe.JSONNotEquals, true), true},
		{rule("code", recipe.JSONNotEquals, "denied"), false},
		{rule("absent", recipe.JSONMissing, nil), true},
		{rule("nil", recipe.JSONMissing, nil), false}, // null is present
	}
	for _, tt := range tests {
		if got := tt.r.Matches(doc); got != tt.want {
			t.Errorf("%s %s %v = %v, want %v", tt.r.Path, tt.r.Op, tt.r.Value, got, tt.want)
		}
	}
}
