package engine

import (
	"strings"
	"testing"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
)

var browserCheckFile = recipe.File{Path: "browser-check.yaml", Content: []byte(`
apis:
  browser-check:
    steps:
      - goto: "{{ .Vars.baseURL }}/browser-check"
      - waitVisible: "#browser-ok"
      - extract: { as: headerUA, selector: "#ua" }
      - extract: { as: acceptLanguage, selector: "#lang" }
      - evaluate: { script: "navigator.userAgent", as: userAgent }
      - evaluate: { script: "navigator.webdriver", as: webdriver }
      - evaluate: { script: "navigator.language", as: language }
      - evaluate: { script: "[window.outerWidth, window.outerHeight].join('x')", as: window }
      - evaluate: { script: "navigator.userAgentData.brands.map(b => b.brand).join(',')", as: brands }
      - request: { url: "{{ .Vars.baseURL }}/browser-check", as: fetched }
`)}

// TestBrowserLooksLikeAPersons: a site that refuses "HeadlessChrome" lets the
// runner's browser in — the User-Agent header, navigator.userAgent, client hints and
// requests made from the page all name Chrome without "Headless" — and
// navigator.webdriver is false, with a language and a laptop's window.
func TestBrowserLooksLikeAPersons(t *testing.T) {
	t.Parallel()
	_, base := portaltest.Start(t, portal.Config{})
	b := newTestBackend(t, []recipe.File{browserCheckFile})
	b.vars[project+"/s-id"] = map[string]string{"baseURL": base}
	r := newTestRunner(t, Config{}, b, Deps{})
	res := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_API, "browser-check", project, "s-id", 0, nil))
	if res.GetStatus() != statusSucceeded {
		t.Fatalf("the portal's browser check: %s %s (a 403 means it saw HeadlessChrome)", res.GetStatus(), res.GetFailureMessage())
	}
	out := res.GetOutput().GetStructValue().GetFields()
	str := func(k string) string { return out[k].GetStringValue() }
	for _, k := range []string{"headerUA", "userAgent", "brands"} {
		if v := str(k); v == "" || strings.Contains(v, "Headless") {
			t.Errorf("%s = %q, want a value without Headless", k, v)
		}
	}
	if !strings.Contains(str("userAgent"), "Chrome/") || str("headerUA") != str("userAgent") {
		t.Errorf("User-Agent header %q, navigator.userAgent %q: want the same Chrome/ agent", str("headerUA"), str("userAgent"))
	}
	if out["webdriver"].GetBoolValue() {
		t.Error("navigator.webdriver is true")
	}
	if str("language") != "en-US" || !strings.HasPrefix(str("acceptLanguage"), "en-US") {
		t.Errorf("language %q, Accept-Language %q; want en-US", str("language"), str("acceptLanguage"))
	}
	if str("window") != "1366x768" {
		t.Errorf("window %s, want 1366x768", str("window"))
	}
	// The request step fails on a 403; its body is the page that let it in.
	if body := str("fetched"); !strings.Contains(body, "browser-ok") {
		t.Errorf("a request from the page got %.200q, want the welcome page", body)
	}
}

// TestSessionBrowserIdentity: a session pinned to its own User-Agent and locale shows
// them to the site — headers, navigator and Intl — and a task of another session (or
// of the same session with another pin) never gets its warm context.
func TestSessionBrowserIdentity(t *testing.T) {
	t.Parallel()
	_, base := portaltest.Start(t, portal.Config{})
	b := newTestBackend(t, []recipe.File{browserCheckFile, {Path: "intl.yaml", Content: []byte(`
apis:
  intl:
    steps:
      - goto: "{{ .Vars.baseURL }}/browser-check"
      - evaluate: { script: "Intl.DateTimeFormat().resolvedOptions().locale", as: intl }
      - evaluate: { script: "navigator.language", as: language }
      - evaluate: { script: "navigator.userAgent", as: userAgent }
`)}})
	b.vars[project+"/s-id"] = map[string]string{"baseURL": base}
	r := newTestRunner(t, Config{}, b, Deps{})
	const ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36"
	pinned := func(api string, browser *latchkeyv1.BrowserIdentity) *runnerv1.TaskResult {
		tk := task(runnerv1.TaskKind_TASK_KIND_API, api, project, "s-id", 0, nil)
		tk.Session.Browser = browser
		return r.Execute(t.Context(), tk)
	}
	res := pinned("browser-check", &latchkeyv1.BrowserIdentity{UserAgent: ua, Locale: "de-DE"})
	if res.GetStatus() != statusSucceeded {
		t.Fatalf("browser check: %s %s", res.GetStatus(), res.GetFailureMessage())
	}
	out := res.GetOutput().GetStructValue().GetFields()
	str := func(k string) string { return out[k].GetStringValue() }
	if str("headerUA") != ua || str("userAgent") != ua {
		t.Errorf("User-Agent header %q, navigator.userAgent %q; want the session's %q", str("headerUA"), str("userAgent"), ua)
	}
	if str("language") != "de-DE" || str("acceptLanguage") != "de-DE,de;q=0.9,en;q=0.8" {
		t.Errorf("navigator.language %q, Accept-Language %q; want de-DE", str("language"), str("acceptLanguage"))
	}

	// The same session's next task with the same pin reuses the warm tab; with the
	// default identity it gets a context of its own that says so.
	res = pinned("intl", &latchkeyv1.BrowserIdentity{UserAgent: ua, Locale: "de-DE"})
	out = res.GetOutput().GetStructValue().GetFields()
	if !res.GetWarmContext() || str("intl") != "de-DE" {
		t.Errorf("same pin: warm %v, Intl locale %q; want a warm tab in de-DE", res.GetWarmContext(), str("intl"))
	}
	res = pinned("intl", nil)
	out = res.GetOutput().GetStructValue().GetFields()
	if res.GetWarmContext() || str("language") != "en-US" || strings.Contains(str("userAgent"), "Windows") {
		t.Errorf("default pin: warm %v, language %q, agent %q; want a context of its own in en-US with the runner's agent",
			res.GetWarmContext(), str("language"), str("userAgent"))
	}
}
