package recipe_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/latchkey/latchkey/libs/recipe"
)

func loadDir(t *testing.T, dir string) []recipe.File {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []recipe.File
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, recipe.File{Path: e.Name(), Content: b})
	}
	return files
}

func TestExamplePortalBundleParses(t *testing.T) {
	t.Parallel()
	b, err := recipe.Parse(loadDir(t, "../../examples/portal/automations"), recipe.Options{RequireAuthSessions: true})
	if err != nil {
		t.Fatalf("example bundle invalid: %v", err)
	}
	for _, name := range []string{recipe.CreateAPI, recipe.CheckAPI, "list-invoices"} {
		if b.APIs[name] == nil {
			t.Errorf("missing API %s", name)
		}
	}
	create := b.APIs[recipe.CreateAPI]
	last := create.Steps[len(create.Steps)-1]
	if last.Kind != recipe.ExpectVisible || last.Selector != "#user-menu" || last.FailAs != "INVALID_CREDENTIALS" || last.Timeout != 10*time.Second {
		t.Errorf("last create step = %+v", last)
	}
	if w := create.Steps[5].When; w == nil || w.Selector != "#login-error" || w.Contains != "locked" {
		t.Errorf("when not parsed: %+v", create.Steps[5])
	}
	list := b.APIs["list-invoices"].Steps[2]
	if list.List != "#invoices tbody tr" || len(list.Fields) != 4 {
		t.Errorf("list extract = %+v", list)
	}
	check := b.APIs[recipe.CheckAPI].Steps[0]
	if !cmp.Equal(check.ExpectStatus, []int{200}) || !cmp.Equal(check.InvalidStatus, []int{401, 403}) {
		t.Errorf("request statuses = %v %v", check.ExpectStatus, check.InvalidStatus)
	}
	if b.Vars["baseURL"] != "http://127.0.0.1:7490" {
		t.Errorf("vars = %v", b.Vars)
	}
}

// TestEveryStepKindParses covers the shorthand and the mapping form of every kind.
func TestEveryStepKindParses(t *testing.T) {
	t.Parallel()
	src := `apis:
  all-steps:
    steps:
      - goto: "https://example.test/{{ .Params.page }}"
      - click: "#a"
      - fill: { selector: "#b", value: "{{ .Vars.v }}" }
      - press: { key: Enter, selector: "#b" }
      - select: { selector: "#c", value: "two" }
      - waitVisible: "#d"
      - waitHidden: "#spinner"
      - waitURL: { regex: "/done$" }
      - expectVisible: "#e"
      - expectText: { selector: "#f", contains: "Hello" }
      - expectURL: "/dashboard"
      - extract: { as: name, selector: "#g", attribute: title }
      - evaluate: { script: "return 1+1", as: two }
      - request: { url: "https://example.test/api", method: POST, headers: { X-A: b }, body: "{}", expectStatus: [200, 201] }
      - totp: { secret: "{{ .Vars.secret }}", as: code }
      - ask: { field: sms, prompt: "code?", choices: [a, b], wait: 1m }
      - screenshot: { as: shot, fullPage: true }
      - sleep: 250ms
      - fail: { reason: CAPTCHA_BLOCKED, message: "captcha", when: ".captcha" }
        optional: true
`
	b, err := recipe.Parse([]recipe.File{{Path: "all.yaml", Content: []byte(src)}}, recipe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	steps := b.APIs["all-steps"].Steps
	want := []recipe.Kind{recipe.Goto, recipe.Click, recipe.Fill, recipe.Press, recipe.Select, recipe.WaitVisible,
		recipe.WaitHidden, recipe.WaitURL, recipe.ExpectVisible, recipe.ExpectText, recipe.ExpectURL, recipe.Extract,
		recipe.Evaluate, recipe.Request, recipe.TOTP, recipe.Ask, recipe.Screenshot, recipe.Sleep, recipe.Fail}
	var got []recipe.Kind
	for _, s := range steps {
		got = append(got, s.Kind)
	}
	if !cmp.Equal(got, want) {
		t.Fatalf("kinds = %v", got)
	}
	if steps[17].Duration != 250*time.Millisecond || steps[15].Duration != time.Minute || !steps[18].Optional {
		t.Errorf("durations or options lost: %+v %+v %+v", steps[17], steps[15], steps[18])
	}
}

func TestInvalidBundlesNameFileAPIStepAndField(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		src  string
		opts recipe.Options
		want []string
	}{
		{"bad yaml", "apis: [", recipe.Options{}, []string{"b.yaml", "invalid YAML"}},
		{"unknown kind", "apis:\n  x:\n    steps:\n      - hover: '#a'\n", recipe.Options{}, []string{"b.yaml:4", "api x", "step 0", "field hover", "unknown key"}},
		{"two kinds", "apis:\n  x:\n    steps:\n      - click: '#a'\n        goto: 'u'\n", recipe.Options{}, []string{"step 0", "exactly one kind"}},
		{"missing field", "apis:\n  x:\n    steps:\n      - goto: u\n      - fill: { selector: '#a' }\n", recipe.Options{}, []string{"step 1 (fill)", "field value", "required"}},
		{"unknown field", "apis:\n  x:\n    steps:\n      - click: { selector: '#a', button: right }\n", recipe.Options{}, []string{"step 0 (click)", "field button", "unknown field"}},
		{"bad template", "apis:\n  x:\n    steps:\n      - goto: '{{ .Params.url '\n", recipe.Options{}, []string{"step 0 (goto)", "field url", "bad template"}},
		{"credentials outside create", "apis:\n  x:\n    steps:\n      - fill: { selector: '#p', value: '{{ .Credentials.password }}' }\n", recipe.Options{}, []string{"field value", "only auth-sessions/create"}},
		{"bad failAs", "apis:\n  x:\n    steps:\n      - click: { selector: '#a', failAs: WRONG }\n", recipe.Options{}, []string{"field failAs", "INVALID_CREDENTIALS"}},
		{"long sleep", "apis:\n  x:\n    steps:\n      - sleep: 1h\n", recipe.Options{}, []string{"step 0 (sleep)", "field duration"}},
		{"bad duration", "apis:\n  x:\n    steps:\n      - click: { selector: '#a', timeout: soon }\n", recipe.Options{}, []string{"field timeout", "not a duration"}},
		{"bad status", "apis:\n  x:\n    steps:\n      - request: { url: u, expectStatus: 999 }\n", recipe.Options{}, []string{"field expectStatus", "not an HTTP status"}},
		{"extract both", "apis:\n  x:\n    steps:\n      - extract: { as: a, selector: '#a', list: 'tr', fields: { a: td } }\n", recipe.Options{}, []string{"field selector|list"}},
		{"no steps", "apis:\n  x:\n    description: nothing\n", recipe.Options{}, []string{"api x", "field steps"}},
		{"bad api name", "apis:\n  List Invoices:\n    steps:\n      - goto: u\n", recipe.Options{}, []string{"api List Invoices", "API names"}},
		{"missing auth apis", "apis:\n  x:\n    steps:\n      - goto: u\n", recipe.Options{RequireAuthSessions: true}, []string{"api auth-sessions/create", "api auth-sessions/check"}},
		{"unknown top key", "api:\n  x: {}\n", recipe.Options{}, []string{"field api", "unknown top-level key"}},
		{"bad redirect", "apis:\n  x:\n    steps:\n      - request: { url: u, redirect: never }\n", recipe.Options{}, []string{"step 0 (request)", "field redirect", "follow"}},
		{"redirectTo with manual", "apis:\n  x:\n    steps:\n      - request: { url: u, redirect: manual, invalidIf: { redirectTo: /login } }\n", recipe.Options{}, []string{"step 0 (request)", "field invalidIf.redirectTo", "redirected: true"}},
		{"bad redirectTo", "apis:\n  x:\n    steps:\n      - request: { url: u, invalidIf: { redirectTo: login } }\n", recipe.Options{}, []string{"b.yaml:4", "field invalidIf.redirectTo", "path such as /login"}},
		{"unknown rule", "apis:\n  x:\n    steps:\n      - request:\n          url: u\n          invalidIf:\n            statusIs: 401\n", recipe.Options{}, []string{"b.yaml:7", "step 0 (request)", "field invalidIf.statusIs", "unknown rule"}},
		{"empty invalidIf", "apis:\n  x:\n    steps:\n      - request: { url: u, invalidIf: {} }\n", recipe.Options{}, []string{"field invalidIf", "mapping of rules"}},
		{"redirected false", "apis:\n  x:\n    steps:\n      - request: { url: u, invalidIf: { redirected: false } }\n", recipe.Options{}, []string{"field invalidIf.redirected", "must be true"}},
		{"bad json path", "apis:\n  x:\n    steps:\n      - request:\n          url: u\n          invalidIf:\n            json:\n              - { path: a.b, missing: true }\n              - { path: 'a..b', equals: 1 }\n", recipe.Options{}, []string{"b.yaml:9", "field invalidIf.json[1].path", "empty segment"}},
		{"json two operators", "apis:\n  x:\n    steps:\n      - request: { url: u, invalidIf: { json: { path: a, equals: 1, missing: true } } }\n", recipe.Options{}, []string{"field invalidIf.json", "exactly one of"}},
		{"json no operator", "apis:\n  x:\n    steps:\n      - request: { url: u, invalidIf: { json: { path: a } } }\n", recipe.Options{}, []string{"field invalidIf.json", "{path: error.code, equals: denied}"}},
		{"json equals a mapping", "apis:\n  x:\n    steps:\n      - request: { url: u, invalidIf: { json: { path: a, equals: { b: 1 } } } }\n", recipe.Options{}, []string{"field invalidIf.json.equals", "string, number"}},
		{"json missing false", "apis:\n  x:\n    steps:\n      - request: { url: u, invalidIf: { json: { path: a, missing: false } } }\n", recipe.Options{}, []string{"field invalidIf.json.missing", "notEquals"}},
		{"bad noWaitAfter", "apis:\n  x:\n    steps:\n      - click: { selector: '#a', noWaitAfter: sometimes }\n", recipe.Options{}, []string{"step 0 (click)", "field noWaitAfter", "true or false"}},
		{"retry without when", "apis:\n  x:\n    steps:\n      - totp: { secret: s, name: code }\n      - retry: code\n", recipe.Options{}, []string{"step 1 (retry)", "field when", "condition"}},
		{"retry to nothing", "apis:\n  x:\n    steps:\n      - totp: { secret: s, name: code }\n      - retry: { from: kode, when: '#e' }\n", recipe.Options{}, []string{"b.yaml:5", "step 1 (retry)", "field from", `no step is named "kode"`}},
		{"retry forward", "apis:\n  x:\n    steps:\n      - retry: { from: code, when: '#e' }\n      - totp: { secret: s, name: code }\n", recipe.Options{}, []string{"step 0 (retry)", "field from", "earlier step"}},
		{"retry ambiguous", "apis:\n  x:\n    steps:\n      - totp: { secret: s, name: code }\n      - totp: { secret: s, name: code }\n      - retry: { from: code, when: '#e' }\n", recipe.Options{}, []string{"step 2 (retry)", `2 steps are named "code"`}},
		{"credentials in a rule outside create", "apis:\n  x:\n    steps:\n      - request: { url: u, invalidIf: { bodyContains: '{{ .Credentials.username }}' } }\n", recipe.Options{}, []string{"field invalidIf.bodyContains", "only auth-sessions/create"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := recipe.Parse([]recipe.File{{Path: "b.yaml", Content: []byte(tc.src)}}, tc.opts)
			if err == nil || b != nil {
				t.Fatalf("accepted: %+v", b)
			}
			if !errors.Is(err, recipe.ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			var re *recipe.Error
			if !errors.As(err, &re) {
				t.Errorf("no *recipe.Error in %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestBundleLevelProblems(t *testing.T) {
	t.Parallel()
	api := []byte("apis:\n  x:\n    steps:\n      - goto: u\n")
	cases := []struct {
		name  string
		files []recipe.File
		want  string
	}{
		{"empty", nil, "no files"},
		{"absolute path", []recipe.File{{Path: "/etc/a.yaml", Content: api}}, "relative"},
		{"escape", []recipe.File{{Path: "../a.yaml", Content: api}}, "relative"},
		{"not yaml", []recipe.File{{Path: "a.json", Content: api}}, ".yaml"},
		{"duplicate api", []recipe.File{{Path: "a.yaml", Content: api}, {Path: "b.yaml", Content: api}}, "already defined in a.yaml"},
		{"too large", []recipe.File{{Path: "a.yaml", Content: make([]byte, recipe.MaxFileBytes+1)}}, "at most"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := recipe.Parse(tc.files, recipe.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestRenderNeverLeaksValues(t *testing.T) {
	t.Parallel()
	d := recipe.Data{Credentials: map[string]string{"password": "hunter2-canary"}, Vars: map[string]string{"baseURL": "http://x"}}
	got, err := recipe.Render("url", "{{ .Vars.baseURL }}/login", d)
	if err != nil || got != "http://x/login" {
		t.Fatalf("render = %q, %v", got, err)
	}
	_, err = recipe.Render("value", "{{ .Credentials.username }}{{ .Credentials.password }}", d)
	if err == nil {
		t.Fatal("missing credential rendered without error")
	}
	if strings.Contains(err.Error(), "hunter2-canary") {
		t.Fatalf("error leaks a credential: %v", err)
	}
	step := &recipe.Step{Index: 3, Kind: recipe.Fill, Selector: "#password", Value: "hunter2-canary"}
	if d := step.Describe(); strings.Contains(d, "hunter2") || !strings.Contains(d, "#password") {
		t.Fatalf("Describe = %q", d)
	}
}
