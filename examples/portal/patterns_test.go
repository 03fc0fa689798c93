package portal_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pquerna/otp/totp"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
)

// TestAccountRedirectsToLoginWhenLoggedOut: /account answers a logged-out request with
// a 302 to the login page, which answers 200 — a status-only check sees nothing wrong.
func TestAccountRedirectsToLoginWhenLoggedOut(t *testing.T) {
	t.Parallel()
	p, base := startPortal(t, portal.Config{})
	c := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword)

	r := send(t, "GET", base+"/account", nil, withCookies(c))
	if r.status != http.StatusOK || !strings.Contains(r.body, `<span id="account-username">alice</span>`) {
		t.Fatalf("logged in: status %d, body:\n%s", r.status, r.body)
	}
	if r.cookies[portal.SessionCookie] == nil {
		t.Error("logged in: /account did not rotate the session cookie as every page does")
	}
	p.ExpireSessions()
	r = send(t, "GET", base+"/account", nil, withCookies(c))
	if r.status != http.StatusFound || r.header.Get("Location") != "/login?next=%2Faccount" {
		t.Fatalf("logged out: status %d, Location %q; want 302 to /login?next=%%2Faccount", r.status, r.header.Get("Location"))
	}
	if r := send(t, "GET", base+r.header.Get("Location"), nil); r.status != http.StatusOK || !strings.Contains(r.body, `id="login-form"`) {
		t.Errorf("the redirect's target: status %d, want the login form with 200", r.status)
	}
}

// TestWhoamiAnswers200WithAnErrorBody: /api/whoami always answers 200; only its body
// tells a logged-in session from a logged-out one.
func TestWhoamiAnswers200WithAnErrorBody(t *testing.T) {
	t.Parallel()
	p, base := startPortal(t, portal.Config{})
	c := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword)

	r := send(t, "GET", base+"/api/whoami", nil, withCookies(c))
	want := map[string]any{"success": true, "user": map[string]any{"username": "alice"}}
	if diff := cmp.Diff(want, decodeJSON[map[string]any](t, r)); r.status != http.StatusOK || diff != "" {
		t.Errorf("logged in: status %d, body (-want +got):\n%s", r.status, diff)
	}
	p.ExpireSessions()
	for name, opts := range map[string][]reqOption{"expired cookie": {withCookies(c)}, "no cookie": nil} {
		r := send(t, "GET", base+"/api/whoami", nil, opts...)
		want := map[string]any{"success": false, "error": map[string]any{"code": "denied", "message": "Sign in to continue"}}
		if diff := cmp.Diff(want, decodeJSON[map[string]any](t, r)); r.status != http.StatusOK || diff != "" {
			t.Errorf("%s: status %d, body (-want +got):\n%s", name, r.status, diff)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", name, ct)
		}
	}
}

// TestSingleUseTOTP: erin's codes work once (RFC 6238 section 5.2): after a code of a
// time step was accepted, the same code and older ones are refused, a later step's
// code is accepted. Bob's codes stay reusable.
func TestSingleUseTOTP(t *testing.T) {
	t.Parallel()
	p, base := startPortal(t, portal.Config{})
	step := time.Now().Unix() / 30
	codeAt := func(secret string, s int64) string {
		c, err := totp.GenerateCode(secret, time.Unix(s*30, 0))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	attempts := []struct {
		name     string
		user     portal.User
		code     string
		accepted bool
	}{
		{"erin, the current step", erin(), codeAt(portal.ErinTOTPSecret, step), true},
		{"erin, the same code again", erin(), codeAt(portal.ErinTOTPSecret, step), false},
		{"erin, the step before", erin(), codeAt(portal.ErinTOTPSecret, step-1), false},
		{"erin, the next step", erin(), codeAt(portal.ErinTOTPSecret, step+1), true},
		{"erin, the next step again", erin(), codeAt(portal.ErinTOTPSecret, step+1), false},
		{"bob, the current step", bob(), codeAt(portal.BobTOTPSecret, step), true},
		{"bob, the same code again", bob(), codeAt(portal.BobTOTPSecret, step), true},
	}
	// In order, not in parallel: each attempt depends on the ones before.
	for _, a := range attempts {
		status, loginErr := totpLogin(t, base, a.user, a.code)
		switch {
		case a.accepted && status != http.StatusOK:
			t.Errorf("%s: status %d (%q), want the dashboard", a.name, status, loginErr)
		case !a.accepted && (status != http.StatusUnauthorized || loginErr != "Invalid code"):
			t.Errorf("%s: status %d, #login-error %q; want 401 %q", a.name, status, loginErr, "Invalid code")
		}
	}
	if c := p.Counters(); c.LoginsByUser["erin"] != 2 || c.LoginsByUser["bob"] != 2 || c.FailedLogins != 3 {
		t.Errorf("counters %+v: want 2 logins each for erin and bob, 3 refused codes", c)
	}
}

// TestLoginBanner: with Config.LoginBanner the login page shows a visible alert, before
// and after a failed login; other pages, and the default portal, do not.
func TestLoginBanner(t *testing.T) {
	t.Parallel()
	const notice = "Scheduled maintenance on Sunday"
	_, base := startPortal(t, portal.Config{LoginBanner: notice})
	banner := `<p id="site-notice" class="error" role="alert">` + notice + `</p>`
	if r := send(t, "GET", base+"/login", nil); !strings.Contains(r.body, banner) {
		t.Errorf("the login page lacks the banner:\n%s", r.body)
	}
	r, _, err := tryLogin(base, portal.AliceUsername, "wrong")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.body, banner) || loginError(r.body) != "Invalid username or password" {
		t.Errorf("a failed login's page lacks the banner or the error:\n%s", r.body)
	}
	c := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword)
	if r := send(t, "GET", base+"/dashboard", nil, withCookies(c)); strings.Contains(r.body, "site-notice") {
		t.Error("the dashboard shows the login page's banner")
	}
	_, plain := startPortal(t, portal.Config{})
	if r := send(t, "GET", plain+"/login", nil); strings.Contains(r.body, "site-notice") {
		t.Error("a portal without LoginBanner shows a banner")
	}
}

func erin() portal.User {
	return portal.User{Username: portal.ErinUsername, Password: portal.ErinPassword, TOTPSecret: portal.ErinTOTPSecret}
}

func bob() portal.User {
	return portal.User{Username: portal.BobUsername, Password: portal.BobPassword, TOTPSecret: portal.BobTOTPSecret}
}

// totpLogin logs u in with the given TOTP code and returns the final status and the
// page's #login-error.
func totpLogin(t *testing.T, base string, u portal.User, code string) (int, string) {
	t.Helper()
	c := portaltest.NewClient(t)
	csrf := csrfField.FindStringSubmatch(portaltest.Get(t, c, base+"/login"))[1]
	resp := portaltest.PostForm(t, c, base+"/login", url.Values{"csrf_token": {csrf}, "username": {u.Username}, "password": {u.Password}})
	if resp.Request.URL.Path != "/login/totp" {
		t.Fatalf("after %s's password: at %s, want /login/totp", u.Username, resp.Request.URL.Path)
	}
	resp, err := c.PostForm(base+"/login/totp", url.Values{"csrf_token": {csrf}, "totp": {code}})
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	return resp.StatusCode, loginError(body)
}

// TestBrowserCheckRefusesHeadlessChrome: /browser-check refuses a browser whose
// User-Agent says it is headless, as many sites do.
func TestBrowserCheckRefusesHeadlessChrome(t *testing.T) {
	t.Parallel()
	_, base := startPortal(t, portal.Config{})
	const headless = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36"
	for ua, want := range map[string]int{
		headless: http.StatusForbidden,
		strings.Replace(headless, "HeadlessChrome", "Chrome", 1): http.StatusOK,
	} {
		if r := send(t, "GET", base+"/browser-check", nil, withHeader("User-Agent", ua)); r.status != want {
			t.Errorf("User-Agent %q: status %d, want %d", ua, r.status, want)
		}
	}
}
