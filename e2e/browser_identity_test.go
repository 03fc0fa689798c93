package e2e

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

var browserCheckAPI = &latchkeyv1.BundleFile{Path: "browser-check.yaml", Content: []byte(`
apis:
  browser-check:
    steps:
      - goto: "{{ .Vars.baseURL }}/browser-check"
      - waitVisible: "#browser-ok"
      - extract: { as: headerUA, selector: "#ua" }
      - extract: { as: acceptLanguage, selector: "#lang" }
      - evaluate: { script: "navigator.language", as: language }
`)}

// TestSessionBrowserIdentity: a session pinned to a User-Agent and a locale shows them
// to its site on every Run (through the scheduler's tasks, the login's verification
// included); changing them with UpdateAuthSession takes effect on the next Run; an
// identity no browser could send is refused with a message saying why.
func TestSessionBrowserIdentity(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	w.deploy(t, browserCheckAPI)
	const ua = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36"
	resp, err := w.sessions.CreateAuthSession(t.Context(), &latchkeyv1.CreateAuthSessionRequest{
		Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Credentials: alice(), Vars: map[string]string{"baseURL": w.portalURL},
		Browser: &latchkeyv1.BrowserIdentity{UserAgent: ua, Locale: "fr-FR"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if run := w.wait(t, resp.GetCreateRunId()); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("login: %s %s", run.GetState(), run.GetFailureMessage())
	}
	id := resp.GetAuthSession().GetId()
	check := func(wantUA, wantLang string) {
		t.Helper()
		run := w.wait(t, w.start(t, "browser-check", id, nil).GetId())
		if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			t.Fatalf("browser-check: %s %s", run.GetState(), run.GetFailureMessage())
		}
		out := run.GetOutput().GetStructValue().GetFields()
		if got := out["headerUA"].GetStringValue(); got != wantUA {
			t.Errorf("the site saw User-Agent %q, want %q", got, wantUA)
		}
		if got := out["language"].GetStringValue(); got != wantLang || !strings.HasPrefix(out["acceptLanguage"].GetStringValue(), wantLang) {
			t.Errorf("language %q, Accept-Language %q; want %s", got, out["acceptLanguage"].GetStringValue(), wantLang)
		}
	}
	check(ua, "fr-FR")

	if _, err := w.sessions.UpdateAuthSession(t.Context(), &latchkeyv1.UpdateAuthSessionRequest{
		AuthSession: &latchkeyv1.AuthSession{Id: id, Browser: &latchkeyv1.BrowserIdentity{Locale: "de-DE"}},
		UpdateMask:  &fieldmaskpb.FieldMask{Paths: []string{"browser"}},
	}); err != nil {
		t.Fatal(err)
	}
	got := w.session(t, id)
	if got.GetBrowser().GetLocale() != "de-DE" || got.GetBrowser().GetUserAgent() != "" {
		t.Fatalf("after the update the session's browser is %v", got.GetBrowser())
	}
	run := w.wait(t, w.start(t, "browser-check", id, nil).GetId())
	out := run.GetOutput().GetStructValue().GetFields()
	if lang := out["language"].GetStringValue(); lang != "de-DE" || strings.Contains(out["headerUA"].GetStringValue(), "Macintosh") || strings.Contains(out["headerUA"].GetStringValue(), "Headless") {
		t.Errorf("after the update: language %q, User-Agent %q; want de-DE and the runner's own agent", lang, out["headerUA"].GetStringValue())
	}

	for _, bad := range []struct {
		b    *latchkeyv1.BrowserIdentity
		want string
	}{
		{&latchkeyv1.BrowserIdentity{Locale: "french please"}, "not a language tag"},
		{&latchkeyv1.BrowserIdentity{UserAgent: "Mozilla/5.0\r\nX-Injected: 1"}, "printable ASCII"},
		{&latchkeyv1.BrowserIdentity{UserAgent: strings.Repeat("a", 513)}, "longer than 512"},
	} {
		_, err := w.sessions.CreateAuthSession(t.Context(), &latchkeyv1.CreateAuthSessionRequest{
			Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Credentials: alice(), Browser: bad.b,
		})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("browser %v: %v, want InvalidArgument saying %q", bad.b, err, bad.want)
		}
	}
}
