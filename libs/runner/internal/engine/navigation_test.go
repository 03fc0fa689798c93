package engine

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// navPage is a login-like page with an error banner always visible (a maintenance
// notice), a form whose submission the site answers slowly, and controls that do not
// navigate.
const navPage = `<!doctype html><html><body>
<p class="error" role="alert">Maintenance on Sunday</p>
<form id="f" method="post" action="/submit"><input id="q" name="q"><button id="go" type="submit">Go</button></form>
<form id="nc" method="post" action="/nocontent"><button id="nc-go" type="submit">No content</button></form>
<button id="noop" type="button" onclick="document.getElementById('out').textContent = 'clicked'">Noop</button>
<a id="anchor" href="#part">part</a> <a id="slow" href="/slow">slow</a>
<div id="out"></div><div id="part">part</div>
</body></html>`

// submitDelay is how long the site takes to answer the form.
const submitDelay = 800 * time.Millisecond

func navSite(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /form", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, navPage) })
	mux.HandleFunc("POST /submit", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(submitDelay) // the site takes its time: the old page stays up meanwhile
		http.Redirect(w, r, "/next", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /next", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, `<p id="ok">next page</p>`) })
	mux.HandleFunc("POST /nocontent", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
		fmt.Fprint(w, "slow")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

const navBundle = `
apis:
  click-submit:
    steps:
      - goto: "{{ .Vars.site }}/form"
      - fill: { selector: "#q", value: x }
      - click: { selector: "#go", noWaitAfter: {{NOWAIT}} }
      - waitVisible: "#ok, .error"
      - fail: { reason: INVALID_CREDENTIALS, message: "the page shows an error", when: ".error" }
      - expectVisible: "#ok"
  enter-submit:
    steps:
      - goto: "{{ .Vars.site }}/form"
      - fill: { selector: "#q", value: x }
      - press: { key: Enter, selector: "#q" }
      - waitVisible: "#ok, .error"
      - fail: { reason: INVALID_CREDENTIALS, message: "the page shows an error", when: ".error" }
  other-navigations:
    steps:
      - goto: "{{ .Vars.site }}/form"
      - click: "#anchor"
      - click: "#nc-go"
      - click: { selector: "#slow", timeout: 1s }
`

// TestClickWaitsForTheNavigationItStarts: a click that submits a form (and Enter in
// its field) waits for the new page to commit, so the next waitVisible never matches
// the banner of the page being left; with noWaitAfter it returns at once.
// Same-document and no-content navigations end the wait; one that does not commit in
// the step's timeout fails it as TIMEOUT.
func TestClickWaitsForTheNavigationItStarts(t *testing.T) {
	t.Parallel()
	site := navSite(t)
	r := newTestRunner(t, Config{}, nil, Deps{})
	run := func(t *testing.T, nowait bool, api string) (*LocalResult, map[int]string, map[int]time.Duration) {
		t.Helper()
		src := strings.ReplaceAll(navBundle, "{{NOWAIT}}", fmt.Sprint(nowait))
		b, err := recipe.Parse([]recipe.File{{Path: "nav.yaml", Content: []byte(src)}}, recipe.Options{})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		notes, took := map[int]string{}, map[int]time.Duration{}
		res, err := r.RunLocal(t.Context(), LocalRun{Bundle: b, API: api, Vars: map[string]string{"site": site},
			Observer: func(ev sdk.StepEvent) {
				mu.Lock()
				notes[ev.Index] = ev.Note
				took[ev.Index] = ev.Duration
				mu.Unlock()
			}})
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return res, notes, took
	}
	t.Run("a submit click waits", func(t *testing.T) {
		t.Parallel()
		res, notes, took := run(t, false, "click-submit")
		if res.Failure != nil {
			t.Fatalf("failed: %v (click: %q)", res.Failure, notes[2])
		}
		if !strings.HasPrefix(notes[2], "navigated (committed after") || took[2] < submitDelay {
			t.Errorf("click took %s (%q), want at least the %s the site takes to answer", took[2], notes[2], submitDelay)
		}
	})
	// Without the wait the click returns while the page being left is still up, and
	// the next waitVisible may match its banner: the bug of issue 14. Whether the
	// recipe then fails depends on timing (Chromium holds some evaluations while a
	// navigation is pending), so only the return is checked.
	t.Run("noWaitAfter returns before the new page commits", func(t *testing.T) {
		t.Parallel()
		_, notes, took := run(t, true, "click-submit")
		if notes[2] != "did not wait for a navigation (noWaitAfter)" || took[2] >= submitDelay {
			t.Errorf("click took %s (%q), want it back before the site answers", took[2], notes[2])
		}
	})
	t.Run("enter in a form's field waits", func(t *testing.T) {
		t.Parallel()
		res, notes, _ := run(t, false, "enter-submit")
		if res.Failure != nil || !strings.HasPrefix(notes[2], "navigated") {
			t.Fatalf("failed: %v (press: %q)", res.Failure, notes[2])
		}
	})
	t.Run("same-document, no-content and too slow navigations", func(t *testing.T) {
		t.Parallel()
		res, notes, _ := run(t, false, "other-navigations")
		if !strings.HasPrefix(notes[1], "navigated") {
			t.Errorf("anchor click note %q, want navigated (within the document)", notes[1])
		}
		if notes[2] != "started a navigation that ended without a new page" {
			t.Errorf("204 form click note %q", notes[2])
		}
		if res.Failure == nil || res.Failure.Reason != latchkeyv1.FailureReason_FAILURE_REASON_TIMEOUT ||
			!strings.Contains(res.Failure.Message, "step 3 (click) selector #slow: it started a navigation that did not commit in time") {
			t.Errorf("slow click failure %v, want TIMEOUT naming the step", res.Failure)
		}
	})
}

// TestClickGraceWindowCost measures what watching for a navigation costs a click
// that starts none: the look (one turn of the page's task queue) and the click step
// with and without it, side by side in one tab. It fails only when the look takes
// more than 25 ms at the median (a quarter of the bound interp.navGrace), i.e. when
// it stops answering at once.
func TestClickGraceWindowCost(t *testing.T) {
	t.Parallel()
	site := navSite(t)
	const n = 30
	var b strings.Builder
	b.WriteString("apis:\n  clicks:\n    steps:\n      - goto: \"{{ .Vars.site }}/form\"\n")
	for i := range 2 * n {
		fmt.Fprintf(&b, "      - click: { selector: \"#noop\", noWaitAfter: %v }\n", i%2 == 1)
	}
	for range n { // a bare round trip to the page, for scale
		b.WriteString("      - evaluate: \"0\"\n")
	}
	bundle, err := recipe.Parse([]recipe.File{{Path: "clicks.yaml", Content: []byte(b.String())}}, recipe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := newTestRunner(t, Config{}, nil, Deps{})
	var mu sync.Mutex
	var looks, waited, unwaited, evals []time.Duration
	lookRE := regexp.MustCompile(`^no navigation \(looked for (.+)\)$`)
	res, err := r.RunLocal(t.Context(), LocalRun{Bundle: bundle, API: "clicks", Vars: map[string]string{"site": site},
		Observer: func(ev sdk.StepEvent) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case ev.Index == 0:
			case ev.Kind == recipe.Evaluate:
				evals = append(evals, ev.Duration)
			case ev.Index%2 == 1:
				waited = append(waited, ev.Duration)
				if m := lookRE.FindStringSubmatch(ev.Note); m != nil {
					d, _ := time.ParseDuration(m[1])
					looks = append(looks, d)
				}
			default:
				unwaited = append(unwaited, ev.Duration)
			}
		}})
	if err != nil || res.Failure != nil {
		t.Fatalf("%v %v", err, res.Failure)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(looks) != n {
		t.Fatalf("%d clicks said they looked for a navigation, want %d", len(looks), n)
	}
	p := func(ds []time.Duration, q float64) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[int(q*float64(len(s)-1))]
	}
	t.Logf("grace window of a click that navigates nowhere: p50 %s, p90 %s, max %s", p(looks, .5), p(looks, .9), p(looks, 1))
	t.Logf("click step: p50 %s with the wait, %s with noWaitAfter; an evaluate step of 0: p50 %s (n=%d each)", p(waited, .5), p(unwaited, .5), p(evals, .5), n)
	if p(looks, .5) > 25*time.Millisecond {
		t.Errorf("the look for a navigation takes %s at the median, want a few ms", p(looks, .5))
	}
}
