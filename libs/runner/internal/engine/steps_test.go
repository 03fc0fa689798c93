package engine

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

const formPage = `<!doctype html><html><body>
<form id="f"><input id="name"><select id="color"><option value="r">Red</option><option value="g">Green</option></select>
<button id="go" type="submit">Go</button></form>
<div id="out"></div><div id="spinner">loading</div>
<a id="link" href="/target?x=1">link</a>
<ul id="items"><li data-id="1"><span class="n">one</span></li><li data-id="2"><span class="n">two</span></li></ul>
<script>
document.getElementById('f').addEventListener('submit', ev => { ev.preventDefault();
  document.getElementById('out').textContent = 'sent:' + document.getElementById('name').value + ':' + document.getElementById('color').value;
  history.pushState({}, '', '/done'); });
setTimeout(() => document.getElementById('spinner').style.display = 'none', 300);
</script></body></html>`

// stepsBundle uses every step kind once.
const stepsBundle = `
vars:
  greeting: hello
apis:
  every-step:
    steps:
      - goto: "{{ .Vars.site }}/form"
      - waitVisible: "#name"
      - fill: { selector: "#name", value: "{{ .Params.name }}" }
      - select: { selector: "#color", value: Green }
      - press: { key: Enter, selector: "#name" }
      - waitURL: /done
      - expectURL: { regex: "/done$" }
      - expectText: { selector: "#out", contains: "sent:Ada:g" }
      - waitHidden: "#spinner"
      - expectVisible: "#out"
      - extract: { as: out, selector: "#out" }
      - extract: { as: href, selector: "#link", attribute: href }
      - extract: { as: items, list: "#items li", fields: { name: ".n", id: "@data-id" } }
      - evaluate: { script: "1 + 1", as: two }
      - request: { url: "{{ .Vars.site }}/api.json", as: api }
      - totp: { secret: "JBSWY3DPEHPK3PXP", as: code }
      - evaluate: { script: "'{{ .Vars.code }}'.length", as: codeLength }
      - ask: { field: color, prompt: "Which color?", choices: [red, blue] }
      - evaluate: { script: "'{{ .Vars.color }} {{ .Vars.greeting }}'", as: answer }
      - screenshot: { as: shot }
      - sleep: 10ms
      - fail: { reason: TRANSIENT, when: "#no-such-element" }
      - click: { selector: "#missing", optional: true, timeout: 200ms }
      - click: "#link"
      - waitURL: { contains: "/target" }
`

func formSite(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/form", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, formPage) })
	mux.HandleFunc("/target", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "<p>target</p>") })
	mux.HandleFunc("/api.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestEveryStepKind runs a recipe with every step kind, locally (as latchkey try
// does), and checks what each one produced.
func TestEveryStepKind(t *testing.T) {
	t.Parallel()
	site := formSite(t)
	b, err := recipe.Parse([]recipe.File{{Path: "steps.yaml", Content: []byte(stepsBundle)}}, recipe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := newTestRunner(t, Config{}, nil, Deps{})
	var mu sync.Mutex
	var events []sdk.StepEvent
	var shots []string
	res, err := r.RunLocal(t.Context(), LocalRun{
		Bundle: b, API: "every-step", Params: map[string]any{"name": "Ada"}, Vars: map[string]string{"site": site},
		Observer: func(ev sdk.StepEvent) { mu.Lock(); events = append(events, ev); mu.Unlock() },
		Ask: func(_ context.Context, q sdk.Question) (string, error) {
			if q.Field != "color" || q.Prompt != "Which color?" || len(q.Choices) != 2 {
				return "", fmt.Errorf("unexpected question %+v", q)
			}
			return "red", nil
		},
		Artifact: func(id string, png []byte) {
			if len(png) > 0 {
				shots = append(shots, id)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure != nil {
		t.Fatalf("failed: %v", res.Failure)
	}
	out := res.Output.(map[string]any)
	want := map[string]string{
		"out": "sent:Ada:g", "href": "/target?x=1", "two": "2", "api": "map[ok:true]", "codeLength": "6",
		"answer": "red hello", "items": "[map[id:1 name:one] map[id:2 name:two]]", "shot": "try/try/step-19.png",
	}
	for k, v := range want {
		if got := fmt.Sprint(out[k]); got != v {
			t.Errorf("output %s = %q, want %q", k, got, v)
		}
	}
	status := map[int]string{}
	for _, ev := range events {
		status[ev.Index] = ev.Status
	}
	if status[21] != "skipped" || status[22] != "ignored" || status[24] != "ok" || len(status) != 25 {
		t.Errorf("step statuses %v: want fail skipped (21), the optional click ignored (22), all 25 reported", status)
	}
	if len(shots) != 1 {
		t.Errorf("screenshots %v, want the screenshot step's", shots)
	}
}

// TestBadRecipesAndParams: a recipe or params a run cannot use fail with a clear
// SCRIPT_ERROR naming file, API, step and field.
func TestBadRecipesAndParams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		file   string
		api    string
		params map[string]any
		want   []string
	}{
		{"unknown field", "apis:\n  broken:\n    steps:\n      - click: { selectr: '#x' }\n", "broken", nil,
			[]string{"bad.yaml", "api broken", "step 0 (click)", "field selectr", "unknown field"}},
		{"missing param", "apis:\n  needs-param:\n    steps:\n      - goto: '{{ .Params.page }}'\n", "needs-param", nil,
			[]string{"bad.yaml", "api needs-param", "step 0 (goto)", "field url"}},
		{"invalid selector", "apis:\n  bad-selector:\n    steps:\n      - goto: 'data:text/html,<p>x</p>'\n      - waitVisible: 'p[['\n", "bad-selector", nil,
			[]string{"bad.yaml", "api bad-selector", "step 1 (waitVisible)", "not valid CSS"}},
		{"no such api", "apis:\n  other:\n    steps:\n      - sleep: 1ms\n", "missing-api", nil,
			[]string{`no API "missing-api"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newTestBackend(t, []recipe.File{{Path: "bad.yaml", Content: []byte(tt.file)}})
			r := newTestRunner(t, Config{}, b, Deps{})
			res := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_API, tt.api, project, "", 0, tt.params))
			if res.GetStatus() != statusFailed || res.GetFailureReason() != reasonScript {
				t.Fatalf("%s %s (%s), want FAILED SCRIPT_ERROR", res.GetStatus(), res.GetFailureReason(), res.GetFailureMessage())
			}
			for _, w := range tt.want {
				if !strings.Contains(res.GetFailureMessage(), w) {
					t.Errorf("message %q does not name %q", res.GetFailureMessage(), w)
				}
			}
		})
	}
}
