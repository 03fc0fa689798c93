package portal_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pquerna/otp/totp"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	"github.com/latchkey/latchkey/libs/testkit"
)

func TestLoginPageHasFormAndCSRFToken(t *testing.T) {
	t.Parallel()
	_, base := startPortal(t, portal.Config{})

	r := send(t, "GET", base+"/login", nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET /login: status %d, want 200", r.status)
	}
	for _, want := range []string{`id="username"`, `id="password"`, `id="login-button"`, `type="hidden" name="csrf_token"`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("login page lacks %s", want)
		}
	}
	csrf := r.cookies[portal.CSRFCookie]
	if csrf == nil || !csrf.HttpOnly {
		t.Fatalf("pre-login cookie %s = %+v, want an HttpOnly cookie", portal.CSRFCookie, csrf)
	}
	if m := csrfField.FindStringSubmatch(r.body); m == nil || m[1] != csrf.Value {
		t.Errorf("csrf_token field %v doesn't match the %s cookie", m, portal.CSRFCookie)
	}
}

func TestLoginRejectsMissingOrWrongCSRFToken(t *testing.T) {
	t.Parallel()
	p, base := startPortal(t, portal.Config{})
	page := send(t, "GET", base+"/login", nil)
	csrf := page.cookies[portal.CSRFCookie]
	good := csrfField.FindStringSubmatch(page.body)[1]

	tests := []struct {
		name   string
		token  string // form field; "" leaves it out
		cookie bool   // send the pre-login cookie
	}{
		{name: "no token field", cookie: true},
		{name: "wrong token", token: "not-the-token", cookie: true},
		{name: "no pre-login cookie", token: good},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			form := url.Values{"username": {portal.AliceUsername}, "password": {portal.AlicePassword}}
			if tt.token != "" {
				form.Set("csrf_token", tt.token)
			}
			var opts []reqOption
			if tt.cookie {
				opts = append(opts, withCookies(csrf))
			}
			r := send(t, "POST", base+"/login", form, opts...)
			if r.status != http.StatusForbidden {
				t.Errorf("status %d, want 403", r.status)
			}
			if !strings.Contains(r.body, "Invalid or missing CSRF token") {
				t.Errorf("body doesn't explain the rejection:\n%s", r.body)
			}
			if r.cookies[portal.SessionCookie] != nil {
				t.Error("a rejected login set a session cookie")
			}
		})
	}
	t.Cleanup(func() {
		if got := p.Counters().Logins; got != 0 {
			t.Errorf("Logins = %d after CSRF rejections, want 0", got)
		}
	})
}

func TestLoginWithWrongCredentialsShowsError(t *testing.T) {
	t.Parallel()
	_, base := startPortal(t, portal.Config{})
	tests := []struct{ name, username, password string }{
		{"wrong password", portal.AliceUsername, "looking-glass"},
		{"unknown user", "mallory", portal.AlicePassword},
		{"empty password", portal.AliceUsername, ""},
		{"password of another user", portal.AliceUsername, portal.BobPassword},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, _, err := tryLogin(base, tt.username, tt.password)
			if err != nil {
				t.Fatal(err)
			}
			if r.status != http.StatusUnauthorized {
				t.Errorf("status %d, want 401", r.status)
			}
			if got := loginError(r.body); got != "Invalid username or password" {
				t.Errorf("#login-error = %q, want %q", got, "Invalid username or password")
			}
			if !strings.Contains(r.body, `id="login-button"`) {
				t.Error("the form isn't shown again")
			}
			if r.cookies[portal.SessionCookie] != nil {
				t.Error("a failed login set a session cookie")
			}
		})
	}
}

func TestLockoutAfterConsecutiveFailures(t *testing.T) {
	t.Parallel()
	const invalid, locked = "Invalid username or password", "Account locked"
	tests := []struct {
		name      string
		passwords []string // tried in order
		want      []string // #login-error after each, "" for a successful login
	}{
		{
			name:      "locks after three failures, then even the right password fails",
			passwords: []string{"x", "y", "z", portal.AlicePassword},
			want:      []string{invalid, invalid, locked, locked},
		},
		{
			name:      "a success resets the count",
			passwords: []string{"x", "y", portal.AlicePassword, "x", "y", portal.AlicePassword},
			want:      []string{invalid, invalid, "", invalid, invalid, ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, base := startPortal(t, portal.Config{LockoutAfter: 3})
			for i, pw := range tt.passwords {
				r, _, err := tryLogin(base, portal.AliceUsername, pw)
				if err != nil {
					t.Fatal(err)
				}
				if got := loginError(r.body); got != tt.want[i] {
					t.Fatalf("attempt %d: #login-error = %q, want %q", i+1, got, tt.want[i])
				}
				if loggedIn := r.cookies[portal.SessionCookie] != nil; loggedIn != (tt.want[i] == "") {
					t.Fatalf("attempt %d: got a session cookie = %v, want %v", i+1, loggedIn, tt.want[i] == "")
				}
			}
		})
	}

	t.Run("only the failing user is locked and reset unlocks", func(t *testing.T) {
		t.Parallel()
		p, base := startPortal(t, portal.Config{LockoutAfter: 2})
		for range 2 {
			if _, _, err := tryLogin(base, portal.AliceUsername, "wrong"); err != nil {
				t.Fatal(err)
			}
		}
		if c := p.Counters(); c.Lockouts != 1 || c.FailedLogins != 2 {
			t.Errorf("Lockouts %d, FailedLogins %d; want 1, 2", c.Lockouts, c.FailedLogins)
		}
		// Bob's password is still accepted (he goes on to the TOTP step).
		r, _, err := tryLogin(base, portal.BobUsername, portal.BobPassword)
		if err != nil {
			t.Fatal(err)
		}
		if r.status != http.StatusSeeOther || r.header.Get("Location") != "/login/totp" {
			t.Errorf("bob: status %d, Location %q; want 303 to /login/totp", r.status, r.header.Get("Location"))
		}
		if r := send(t, "POST", base+"/__admin/reset", nil); r.status != http.StatusNoContent {
			t.Fatalf("POST /__admin/reset: status %d, want 204", r.status)
		}
		sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword)
	})
}

func TestLoginSetsSessionCookie(t *testing.T) {
	t.Parallel()
	_, base := startPortal(t, portal.Config{SessionTTL: 10 * time.Minute})
	r, _, err := tryLogin(base, portal.AliceUsername, portal.AlicePassword)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/dashboard" {
		t.Fatalf("status %d, Location %q; want 303 to /dashboard", r.status, r.header.Get("Location"))
	}
	c := r.cookies[portal.SessionCookie]
	if c == nil {
		t.Fatalf("no %s cookie set", portal.SessionCookie)
	}
	if !c.HttpOnly || c.Path != "/" || c.SameSite != http.SameSiteLaxMode || c.MaxAge != 600 {
		t.Errorf("cookie HttpOnly=%v Path=%q SameSite=%v MaxAge=%d; want HttpOnly, /, Lax, 600",
			c.HttpOnly, c.Path, c.SameSite, c.MaxAge)
	}
	if len(c.Value) < 43 {
		t.Errorf("session token %d characters long, want at least 256 bits", len(c.Value))
	}
	if other := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword); other.Value == c.Value {
		t.Error("two logins got the same session token")
	}
}

func TestSessionExpiresServerSide(t *testing.T) {
	t.Parallel()

	t.Run("without rotation the session ends TTL after login", func(t *testing.T) {
		t.Parallel()
		// A TTL with room for a loaded CI machine (300 ms was missed under -race while
		// the e2e suite ran): the two uses inside it take 200 ms of it.
		const ttl = time.Second
		_, base := startPortal(t, portal.Config{SessionTTL: ttl, DisableCookieRotation: true})
		c := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword)
		if c.MaxAge != 1 {
			t.Errorf("cookie Max-Age %d, want 1 (the TTL rounded up to a second)", c.MaxAge)
		}
		// The sleeps in this subtest are its subject: the portal has no clock to
		// advance, so the session is used inside its TTL and then left past it.
		for _, wait := range []time.Duration{100 * time.Millisecond, 100 * time.Millisecond} {
			time.Sleep(wait)
			if r := send(t, "GET", base+"/api/me", nil, withCookies(c)); r.status != http.StatusOK {
				t.Fatalf("within the TTL: status %d, want 200", r.status)
			}
		}
		time.Sleep(ttl)
		// The cookie is still sent (the browser would still hold it: Max-Age is 1 s);
		// the server must refuse it and tell the browser to drop it.
		r := send(t, "GET", base+"/api/me", nil, withCookies(c))
		if r.status != http.StatusUnauthorized {
			t.Fatalf("after the TTL: status %d, want 401", r.status)
		}
		if cleared := r.cookies[portal.SessionCookie]; cleared == nil || cleared.MaxAge >= 0 {
			t.Errorf("after the TTL: session cookie not cleared: %+v", cleared)
		}
		if r := send(t, "GET", base+"/dashboard", nil, withCookies(c)); r.status != http.StatusFound || r.header.Get("Location") != "/login" {
			t.Errorf("dashboard after the TTL: status %d, Location %q; want 302 to /login", r.status, r.header.Get("Location"))
		}
	})

	t.Run("with rotation use slides the expiry", func(t *testing.T) {
		t.Parallel()
		// A TTL with room for a loaded CI machine: each gap is well inside it, all
		// five together are longer.
		const ttl = time.Second
		_, base := startPortal(t, portal.Config{SessionTTL: ttl})
		c := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword)
		// Time passing is the subject: the portal has no clock to advance.
		for i := range 5 { // 1.5 s in all, longer than the TTL
			time.Sleep(300 * time.Millisecond)
			r := send(t, "GET", base+"/api/me", nil, withCookies(c))
			if r.status != http.StatusOK {
				t.Fatalf("request %d: status %d, want 200", i+1, r.status)
			}
			c = r.cookies[portal.SessionCookie]
		}
		time.Sleep(ttl + 100*time.Millisecond) // idle past the TTL, on purpose
		if r := send(t, "GET", base+"/api/me", nil, withCookies(c)); r.status != http.StatusUnauthorized {
			t.Fatalf("idle for longer than the TTL: status %d, want 401", r.status)
		}
	})
}

func TestTOTPLogin(t *testing.T) {
	t.Parallel()
	_, base := startPortal(t, portal.Config{})
	code := func(offset time.Duration) func(testing.TB) string {
		return func(tb testing.TB) string {
			c, err := totp.GenerateCode(portal.BobTOTPSecret, time.Now().Add(offset))
			if err != nil {
				tb.Fatalf("generate TOTP code: %v", err)
			}
			return c
		}
	}
	tests := []struct {
		name string
		code func(testing.TB) string
		ok   bool
	}{
		{"current code", code(0), true},
		{"previous step is within the skew", code(-30 * time.Second), true},
		{"next step is within the skew", code(30 * time.Second), true},
		{"three steps old", code(-90 * time.Second), false},
		{"not digits", func(testing.TB) string { return "abcdef" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := portaltest.NewClient(t)
			csrf := csrfField.FindStringSubmatch(portaltest.Get(t, c, base+"/login"))[1]
			resp := portaltest.PostForm(t, c, base+"/login", url.Values{
				"csrf_token": {csrf}, "username": {portal.BobUsername}, "password": {portal.BobPassword},
			})
			if resp.Request.URL.Path != "/login/totp" {
				t.Fatalf("after the password: at %s, want /login/totp", resp.Request.URL.Path)
			}
			page := portaltest.Get(t, c, base+"/login/totp")
			if !strings.Contains(page, `id="totp"`) || !strings.Contains(page, `id="totp-button"`) {
				t.Fatalf("TOTP page lacks #totp or #totp-button:\n%s", page)
			}

			resp, err := c.PostForm(base+"/login/totp", url.Values{"csrf_token": {csrf}, "totp": {tt.code(t)}})
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, resp)
			if !tt.ok {
				if resp.StatusCode != http.StatusUnauthorized || loginError(body) != "Invalid code" {
					t.Fatalf("status %d, #login-error %q; want 401 %q", resp.StatusCode, loginError(body), "Invalid code")
				}
				return
			}
			if resp.Request.URL.Path != "/dashboard" || !strings.Contains(body, `<span id="account-name">bob</span>`) {
				t.Fatalf("at %s (status %d), want bob's dashboard", resp.Request.URL.Path, resp.StatusCode)
			}
		})
	}

	t.Run("no pending login goes back to the login page", func(t *testing.T) {
		t.Parallel()
		r := send(t, "GET", base+"/login/totp", nil)
		if r.status != http.StatusFound || r.header.Get("Location") != "/login" {
			t.Errorf("status %d, Location %q; want 302 to /login", r.status, r.header.Get("Location"))
		}
	})
}

func TestEmailCodeLogin(t *testing.T) {
	t.Parallel()
	_, base := startPortal(t, portal.Config{})
	c := portaltest.NewClient(t)
	csrf := csrfField.FindStringSubmatch(portaltest.Get(t, c, base+"/login"))[1]
	resp := portaltest.PostForm(t, c, base+"/login", url.Values{
		"csrf_token": {csrf}, "username": {portal.CarolUsername}, "password": {portal.CarolPassword},
	})
	if resp.Request.URL.Path != "/login/code" {
		t.Fatalf("after the password: at %s, want /login/code", resp.Request.URL.Path)
	}
	page := portaltest.Get(t, c, base+"/login/code")
	if !strings.Contains(page, `id="code"`) || !strings.Contains(page, `id="code-button"`) {
		t.Fatalf("code page lacks #code or #code-button:\n%s", page)
	}

	code := portaltest.LastCode(t, base, portal.CarolUsername)
	if !regexp.MustCompile(`^[0-9]{6}$`).MatchString(code) {
		t.Fatalf("code %q is not 6 digits", code)
	}
	if strings.Contains(page, code) {
		t.Fatal("the code page shows the code")
	}

	wrong := fmt.Sprintf("%06d", (atoi(t, code)+1)%1_000_000)
	resp, err := c.PostForm(base+"/login/code", url.Values{"csrf_token": {csrf}, "code": {wrong}})
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != http.StatusUnauthorized || loginError(body) != "Invalid code" {
		t.Fatalf("wrong code: status %d, #login-error %q; want 401 %q", resp.StatusCode, loginError(body), "Invalid code")
	}

	resp, err = c.PostForm(base+"/login/code", url.Values{"csrf_token": {csrf}, "code": {code}})
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.Request.URL.Path != "/dashboard" || !strings.Contains(body, `<span id="account-name">carol</span>`) {
		t.Fatalf("right code: at %s (status %d), want carol's dashboard", resp.Request.URL.Path, resp.StatusCode)
	}

	for _, tt := range []struct {
		query string
		want  int
	}{{"?user=alice", http.StatusNotFound}, {"", http.StatusBadRequest}} {
		if r := send(t, "GET", base+"/__admin/last-code"+tt.query, nil); r.status != tt.want {
			t.Errorf("GET /__admin/last-code%s: status %d, want %d", tt.query, r.status, tt.want)
		}
	}
}

func TestDashboard(t *testing.T) {
	t.Parallel()
	_, base := startPortal(t, portal.Config{})

	t.Run("not logged in redirects to login", func(t *testing.T) {
		t.Parallel()
		r := send(t, "GET", base+"/dashboard", nil)
		if r.status != http.StatusFound || r.header.Get("Location") != "/login" {
			t.Errorf("status %d, Location %q; want 302 to /login", r.status, r.header.Get("Location"))
		}
		if strings.Contains(r.body, "user-menu") {
			t.Error("an anonymous visitor sees #user-menu")
		}
	})

	t.Run("logged in shows the user and hands over the API token once", func(t *testing.T) {
		t.Parallel()
		c := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword)
		r := send(t, "GET", base+"/dashboard", nil, withCookies(c))
		if r.status != http.StatusOK {
			t.Fatalf("status %d, want 200", r.status)
		}
		for _, want := range []string{`id="user-menu"`, `<span id="account-name">alice</span>`, `id="token-status"`, `localStorage.setItem('portal_token'`} {
			if !strings.Contains(r.body, want) {
				t.Errorf("dashboard lacks %s", want)
			}
		}
		token := dataNewToken(r.body)
		if token == "" {
			t.Fatal("the first dashboard view after login carries no API token")
		}
		// The token alone, without the cookie, authenticates the API.
		me := send(t, "GET", base+"/api/me", nil, withBearer(token))
		if got := decodeJSON[map[string]string](t, me); me.status != http.StatusOK || got["username"] != "alice" {
			t.Errorf("/api/me with the token: status %d, body %v; want 200 alice", me.status, got)
		}

		again := send(t, "GET", base+"/dashboard", nil, withCookies(r.cookies[portal.SessionCookie]))
		if again.status != http.StatusOK {
			t.Fatalf("second view: status %d, want 200", again.status)
		}
		if tok := dataNewToken(again.body); tok != "" {
			t.Error("the second dashboard view hands the token out again; the page must rely on localStorage")
		}
	})
}

func TestAPIMe(t *testing.T) {
	t.Parallel()
	_, base := startPortal(t, portal.Config{})
	c := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword)
	token := decodeJSON[map[string]string](t, send(t, "GET", base+"/api/token", nil, withCookies(c)))["token"]
	if token == "" {
		t.Fatal("GET /api/token returned no token")
	}
	ok := map[string]string{"username": "alice"}
	unauthorized := map[string]string{"error": "unauthorized"}
	tests := []struct {
		name       string
		opts       []reqOption
		wantStatus int
		want       map[string]string
	}{
		{"session cookie", []reqOption{withCookies(c)}, http.StatusOK, ok},
		{"bearer token without cookie", []reqOption{withBearer(token)}, http.StatusOK, ok},
		{"nothing", nil, http.StatusUnauthorized, unauthorized},
		{"unknown bearer token", []reqOption{withBearer("nope")}, http.StatusUnauthorized, unauthorized},
		{"bad bearer token beats a good cookie", []reqOption{withBearer("nope"), withCookies(c)}, http.StatusUnauthorized, unauthorized},
		{"basic auth", []reqOption{withHeader("Authorization", "Basic YWxpY2U6d29uZGVybGFuZA==")}, http.StatusUnauthorized, unauthorized},
		{"unknown cookie", []reqOption{withCookies(&http.Cookie{Name: portal.SessionCookie, Value: "forged"})}, http.StatusUnauthorized, unauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := send(t, "GET", base+"/api/me", nil, tt.opts...)
			if r.status != tt.wantStatus {
				t.Errorf("status %d, want %d", r.status, tt.wantStatus)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if diff := cmp.Diff(tt.want, decodeJSON[map[string]string](t, r)); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInvoices(t *testing.T) {
	t.Parallel()
	_, base := startPortal(t, portal.Config{})
	for _, u := range []portal.User{
		{Username: portal.AliceUsername, Password: portal.AlicePassword},
		{Username: portal.BobUsername, Password: portal.BobPassword, TOTPSecret: portal.BobTOTPSecret},
	} {
		t.Run(u.Username, func(t *testing.T) {
			t.Parallel()
			c := portaltest.Login(t, base, u)
			header, rows := parseInvoices(t, portaltest.Get(t, c, base+"/invoices"))
			if diff := cmp.Diff([]string{"Number", "Date", "Amount", "Status"}, header); diff != "" {
				t.Errorf("header row (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(portal.InvoicesFor(u.Username), rows); diff != "" {
				t.Errorf("rows (-want +got):\n%s", diff)
			}
			if len(rows) != 5 {
				t.Errorf("%d rows, want 5", len(rows))
			}
		})
	}
	t.Run("deterministic and per user", func(t *testing.T) {
		t.Parallel()
		if !cmp.Equal(portal.InvoicesFor("alice"), portal.InvoicesFor("alice")) {
			t.Error("InvoicesFor is not deterministic")
		}
		if cmp.Equal(portal.InvoicesFor("alice"), portal.InvoicesFor("bob")) {
			t.Error("alice and bob have the same invoices")
		}
	})
	t.Run("not logged in redirects to login", func(t *testing.T) {
		t.Parallel()
		if r := send(t, "GET", base+"/invoices", nil); r.status != http.StatusFound || r.header.Get("Location") != "/login" {
			t.Errorf("status %d, Location %q; want 302 to /login", r.status, r.header.Get("Location"))
		}
	})
}

func TestCookieRotation(t *testing.T) {
	t.Parallel()
	t.Run("rotates and keeps the old value valid within the grace period", func(t *testing.T) {
		t.Parallel()
		const grace = 300 * time.Millisecond
		_, base := startPortal(t, portal.Config{RotationGrace: grace, SessionTTL: time.Minute})
		c0 := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword)

		r1 := send(t, "GET", base+"/api/me", nil, withCookies(c0))
		c1 := r1.cookies[portal.SessionCookie]
		if r1.status != http.StatusOK || c1 == nil || c1.Value == c0.Value {
			t.Fatalf("first request: status %d, new cookie %+v; want 200 and a fresh value", r1.status, c1)
		}
		if !c1.HttpOnly || c1.MaxAge != 60 {
			t.Errorf("rotated cookie HttpOnly=%v MaxAge=%d; want HttpOnly, 60", c1.HttpOnly, c1.MaxAge)
		}

		// A concurrent request that still carries the old value works and learns the
		// current one.
		r2 := send(t, "GET", base+"/api/me", nil, withCookies(c0))
		if r2.status != http.StatusOK || r2.cookies[portal.SessionCookie].Value != c1.Value {
			t.Fatalf("old value within grace: status %d; want 200 and the current value", r2.status)
		}

		r3 := send(t, "GET", base+"/dashboard", nil, withCookies(c1))
		c2 := r3.cookies[portal.SessionCookie]
		if r3.status != http.StatusOK || c2 == nil || c2.Value == c1.Value {
			t.Fatalf("second rotation: status %d, cookie %+v; want 200 and a fresh value", r3.status, c2)
		}

		// Waiting out the grace period is the subject: old values must stop working.
		time.Sleep(grace + 100*time.Millisecond)
		for name, c := range map[string]*http.Cookie{"c0": c0, "c1": c1} {
			if r := send(t, "GET", base+"/api/me", nil, withCookies(c)); r.status != http.StatusUnauthorized {
				t.Errorf("%s after the grace period: status %d, want 401", name, r.status)
			}
		}
		if r := send(t, "GET", base+"/api/me", nil, withCookies(c2)); r.status != http.StatusOK {
			t.Errorf("current value: status %d, want 200", r.status)
		}
	})

	t.Run("disabled keeps the cookie", func(t *testing.T) {
		t.Parallel()
		_, base := startPortal(t, portal.Config{DisableCookieRotation: true})
		c := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword)
		for i := range 3 {
			r := send(t, "GET", base+"/dashboard", nil, withCookies(c))
			if r.status != http.StatusOK || r.cookies[portal.SessionCookie] != nil {
				t.Fatalf("request %d: status %d, Set-Cookie %v; want 200 and no new cookie", i+1, r.status, r.cookies[portal.SessionCookie])
			}
		}
	})
}

func TestFaultInjection(t *testing.T) {
	t.Parallel()
	type step struct {
		path       string
		wantStatus int
		retryAfter string // expected Retry-After header
	}
	tests := []struct {
		name  string
		fault string // JSON for POST /__admin/fault
		steps []step
	}{
		{
			name:  "next N requests answer 429",
			fault: `{"too_many_requests": 2, "retry_after_seconds": 3}`,
			steps: []step{{"/login", 429, "3"}, {"/api/me", 429, "3"}, {"/login", 200, ""}},
		},
		{
			name:  "next N requests answer 500",
			fault: `{"server_errors": 1}`,
			steps: []step{{"/login", 500, ""}, {"/login", 200, ""}},
		},
		{
			name:  "site down answers 503 until cleared",
			fault: `{"down": true}`,
			steps: []step{{"/login", 503, "1"}, {"/api/me", 503, "1"}, {"/dashboard", 503, "1"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, base := startPortal(t, portal.Config{})
			if r := send(t, "POST", base+"/__admin/fault", nil, withBody(tt.fault)); r.status != http.StatusOK {
				t.Fatalf("POST /__admin/fault: status %d: %s", r.status, r.body)
			}
			for i, s := range tt.steps {
				r := send(t, "GET", base+s.path, nil)
				if r.status != s.wantStatus || r.header.Get("Retry-After") != s.retryAfter {
					t.Errorf("step %d GET %s: status %d, Retry-After %q; want %d, %q",
						i+1, s.path, r.status, r.header.Get("Retry-After"), s.wantStatus, s.retryAfter)
				}
			}
			// Admin endpoints are never faulted.
			if r := send(t, "GET", base+"/__admin/counters", nil); r.status != http.StatusOK {
				t.Errorf("GET /__admin/counters under a fault: status %d, want 200", r.status)
			}
			p.SetFault(portal.Fault{})
			if r := send(t, "GET", base+"/login", nil); r.status != http.StatusOK {
				t.Errorf("after clearing the fault: status %d, want 200", r.status)
			}
		})
	}

	t.Run("in-process API, counters and delay", func(t *testing.T) {
		t.Parallel()
		p, base := startPortal(t, portal.Config{})
		p.SetFault(portal.Fault{TooManyRequests: 1, Delay: 150 * time.Millisecond})
		start := time.Now()
		r := send(t, "GET", base+"/api/me", nil)
		if r.status != http.StatusTooManyRequests || time.Since(start) < 150*time.Millisecond {
			t.Errorf("status %d after %v; want 429 after at least 150ms", r.status, time.Since(start))
		}
		if got := decodeJSON[map[string]string](t, r); got["error"] != "too many requests" {
			t.Errorf("API fault body %v, want a JSON error", got)
		}
		if got := p.CurrentFault(); got.TooManyRequests != 0 || got.Delay != 150*time.Millisecond {
			t.Errorf("CurrentFault() = %+v, want the 429s used up and the delay kept", got)
		}
		if c := p.Counters(); c.Faults != 1 || c.Requests != 1 {
			t.Errorf("Faults %d, Requests %d; want 1, 1", c.Faults, c.Requests)
		}
		got := decodeJSON[map[string]any](t, send(t, "GET", base+"/__admin/fault", nil))
		if got["delay"] != "150ms" {
			t.Errorf("GET /__admin/fault = %v, want delay 150ms", got)
		}
	})

	t.Run("invalid fault bodies are rejected", func(t *testing.T) {
		t.Parallel()
		_, base := startPortal(t, portal.Config{})
		for _, body := range []string{``, `{"dwon": true}`, `{"too_many_requests": -1}`, `{"delay": "soon"}`, `[1]`} {
			if r := send(t, "POST", base+"/__admin/fault", nil, withBody(body)); r.status != http.StatusBadRequest {
				t.Errorf("POST /__admin/fault %s: status %d, want 400", body, r.status)
			}
		}
	})
}

func TestAdminExpireSessions(t *testing.T) {
	t.Parallel()
	p, base := startPortal(t, portal.Config{})
	c := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword)
	token := decodeJSON[map[string]string](t, send(t, "GET", base+"/api/token", nil, withCookies(c)))["token"]
	for _, opt := range []reqOption{withCookies(c), withBearer(token)} {
		if r := send(t, "GET", base+"/api/me", nil, opt); r.status != http.StatusOK {
			t.Fatalf("before: status %d, want 200", r.status)
		}
	}
	if r := send(t, "POST", base+"/__admin/expire-sessions", nil); r.status != http.StatusNoContent {
		t.Fatalf("POST /__admin/expire-sessions: status %d, want 204", r.status)
	}
	for name, opt := range map[string]reqOption{"cookie": withCookies(c), "bearer token": withBearer(token)} {
		if r := send(t, "GET", base+"/api/me", nil, opt); r.status != http.StatusUnauthorized {
			t.Errorf("%s after expire-sessions: status %d, want 401", name, r.status)
		}
	}
	if r := send(t, "GET", base+"/dashboard", nil, withCookies(c)); r.status != http.StatusFound {
		t.Errorf("dashboard after expire-sessions: status %d, want 302", r.status)
	}
	if n := p.Counters().ActiveSessions; n != 0 {
		t.Errorf("ActiveSessions %d, want 0", n)
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	_, base := startPortal(t, portal.Config{})
	c := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword)
	r := send(t, "POST", base+"/logout", nil, withCookies(c))
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/login" {
		t.Errorf("status %d, Location %q; want 303 to /login", r.status, r.header.Get("Location"))
	}
	if r := send(t, "GET", base+"/api/me", nil, withCookies(c)); r.status != http.StatusUnauthorized {
		t.Errorf("after logout: status %d, want 401", r.status)
	}
}

func TestCounters(t *testing.T) {
	t.Parallel()
	p, base := startPortal(t, portal.Config{})
	if _, _, err := tryLogin(base, portal.AliceUsername, "wrong"); err != nil { // 2 requests
		t.Fatal(err)
	}
	c := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword) // 2 requests
	send(t, "GET", base+"/api/me", nil, withCookies(c))                     // 1 request
	portaltest.Login(t, base, portal.User{                                  // 5: GET, POST, GET /login/totp, POST, GET /dashboard
		Username: portal.BobUsername, Password: portal.BobPassword, TOTPSecret: portal.BobTOTPSecret,
	})

	want := portal.Counters{
		Requests:       10,
		MeRequests:     1,
		Logins:         2,
		FailedLogins:   1,
		ActiveSessions: 2,
		LoginsByUser:   map[string]int64{"alice": 1, "bob": 1},
	}
	if diff := cmp.Diff(want, p.Counters()); diff != "" {
		t.Errorf("Counters() (-want +got):\n%s", diff)
	}
	// Over HTTP, twice: admin requests are not counted.
	for range 2 {
		got := decodeJSON[map[string]any](t, send(t, "GET", base+"/__admin/counters", nil))
		wantJSON := map[string]any{
			"requests": 10.0, "me_requests": 1.0, "logins": 2.0, "failed_logins": 1.0, "lockouts": 0.0, "faults": 0.0,
			"active_sessions": 2.0, "logins_by_user": map[string]any{"alice": 1.0, "bob": 1.0},
		}
		if diff := cmp.Diff(wantJSON, got); diff != "" {
			t.Errorf("GET /__admin/counters (-want +got):\n%s", diff)
		}
	}

	send(t, "POST", base+"/__admin/reset", nil)
	want = portal.Counters{ActiveSessions: 2, LoginsByUser: map[string]int64{}}
	if diff := cmp.Diff(want, p.Counters()); diff != "" {
		t.Errorf("after reset (-want +got):\n%s", diff)
	}
}

func TestRequestsByTag(t *testing.T) {
	t.Parallel()
	p, base := startPortal(t, portal.Config{})
	c := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword)
	for _, path := range []string{"/invoices?tag=r1", "/invoices?tag=r2", "/invoices?tag=r1", "/api/me?tag=r1", "/invoices"} {
		send(t, "GET", base+path, nil, withCookies(c))
	}
	send(t, "GET", base+"/__admin/counters?tag=admin", nil) // admin requests are not counted
	want := map[string]int64{"r1": 3, "r2": 1}
	if diff := cmp.Diff(want, p.Counters().RequestsByTag); diff != "" {
		t.Errorf("RequestsByTag (-want +got):\n%s", diff)
	}
	got := decodeJSON[map[string]any](t, send(t, "GET", base+"/__admin/counters", nil))
	if diff := cmp.Diff(map[string]any{"r1": 3.0, "r2": 1.0}, got["requests_by_tag"]); diff != "" {
		t.Errorf("GET /__admin/counters requests_by_tag (-want +got):\n%s", diff)
	}
	send(t, "POST", base+"/__admin/reset", nil)
	if got := p.Counters().RequestsByTag; got != nil {
		t.Errorf("after reset RequestsByTag = %v, want nil", got)
	}
}

func TestConcurrentRequests(t *testing.T) {
	t.Parallel()
	p, base := startPortal(t, portal.Config{})
	c := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword)

	// 50 goroutines: 20 share one session cookie (rotation's grace keeps the first
	// value valid), 10 log in, 10 fail to log in, 10 list invoices.
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	check := func(what string, f func() (int, error), want int) {
		wg.Go(func() {
			got, err := f()
			if err == nil && got != want {
				err = fmt.Errorf("status %d, want %d", got, want)
			}
			if err != nil {
				errs <- fmt.Errorf("%s: %w", what, err)
			}
		})
	}
	status := func(path string) func() (int, error) {
		return func() (int, error) {
			r, err := trySend("GET", base+path, nil, withCookies(c))
			return r.status, err
		}
	}
	for range 20 {
		check("GET /api/me", status("/api/me"), http.StatusOK)
	}
	for range 10 {
		check("GET /invoices", status("/invoices"), http.StatusOK)
		check("login", func() (int, error) {
			_, err := trySessionCookie(base, portal.AliceUsername, portal.AlicePassword)
			return http.StatusSeeOther, err
		}, http.StatusSeeOther)
		check("failed login", func() (int, error) {
			r, _, err := tryLogin(base, "mallory", "guess")
			return r.status, err
		}, http.StatusUnauthorized)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	got := p.Counters()
	if got.Logins != 11 || got.FailedLogins != 10 || got.Requests != 2+20+10+20+20 {
		t.Errorf("Logins %d, FailedLogins %d, Requests %d; want 11, 10, 72", got.Logins, got.FailedLogins, got.Requests)
	}
}

func TestSecretsAreNeverLogged(t *testing.T) {
	t.Parallel()
	var buf testkit.SyncBuffer
	p, base := startPortal(t, portal.Config{
		LockoutAfter: 2,
		Logger:       slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	c := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword)
	r := send(t, "GET", base+"/dashboard", nil, withCookies(c))
	token := dataNewToken(r.body)
	portaltest.Login(t, base, portal.User{Username: portal.CarolUsername, Password: portal.CarolPassword, EmailCode: true})
	code, _ := p.LastCode(portal.CarolUsername)
	for range 2 {
		if _, _, err := tryLogin(base, portal.BobUsername, "hunter2-secret"); err != nil {
			t.Fatal(err)
		}
	}
	p.SetFault(portal.Fault{Down: true})
	p.ExpireSessions()

	log := buf.String()
	for _, want := range []string{"login succeeded", "account locked", "fault set", "all sessions expired"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	secrets := map[string]string{
		"alice's password": portal.AlicePassword, "carol's password": portal.CarolPassword,
		"a wrong password": "hunter2-secret", "bob's TOTP secret": portal.BobTOTPSecret,
		"the session token": c.Value, "the rotated session token": r.cookies[portal.SessionCookie].Value,
		"the API token": token, "the emailed code": code,
	}
	for name, s := range secrets {
		if s == "" {
			t.Errorf("test setup: %s is empty", name)
		} else if strings.Contains(log, s) {
			t.Errorf("the log contains %s", name)
		}
	}
}

func TestStartAndClose(t *testing.T) {
	t.Parallel()
	p := portal.New(portal.Config{})
	base, err := p.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Start("127.0.0.1:0"); err == nil {
		t.Error("a second Start succeeded")
	}
	if r := send(t, "GET", base+"/login", nil); r.status != http.StatusOK {
		t.Errorf("GET /login: status %d, want 200", r.status)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := trySend("GET", base+"/login", nil); err == nil {
		t.Error("the portal still answers after Close")
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// dataNewToken returns the API token the dashboard hands to its script, or "".
func dataNewToken(body string) string {
	m := regexp.MustCompile(`data-new-token="([^"]*)"`).FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return m[1]
}

// parseInvoices extracts the header and rows of table#invoices.
func parseInvoices(tb testing.TB, body string) (header []string, rows []portal.Invoice) {
	tb.Helper()
	table := regexp.MustCompile(`(?s)<table id="invoices">(.*?)</table>`).FindStringSubmatch(body)
	if table == nil {
		tb.Fatalf("no table#invoices in:\n%s", body)
	}
	for _, m := range regexp.MustCompile(`<th>([^<]*)</th>`).FindAllStringSubmatch(table[1], -1) {
		header = append(header, m[1])
	}
	cell := `<td>([^<]*)</td>`
	for _, m := range regexp.MustCompile(`<tr>`+strings.Repeat(cell, 4)+`</tr>`).FindAllStringSubmatch(table[1], -1) {
		rows = append(rows, portal.Invoice{Number: m[1], Date: m[2], Amount: m[3], Status: m[4]})
	}
	return header, rows
}

func withBody(s string) reqOption {
	return func(r *http.Request) {
		r.Body = io.NopCloser(strings.NewReader(s))
		r.ContentLength = int64(len(s))
		r.Header.Set("Content-Type", "application/json")
	}
}

func readAll(tb testing.TB, resp *http.Response) string {
	tb.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read body: %v", err)
	}
	return string(b)
}

func atoi(tb testing.TB, s string) int {
	tb.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func TestLoginErrorsFailOnlyTheLoginPage(t *testing.T) {
	t.Parallel()
	p, base := startPortal(t, portal.Config{})
	p.SetFault(portal.Fault{LoginErrors: 1})
	if r := send(t, "GET", base+"/api/me", nil); r.status != http.StatusUnauthorized {
		t.Errorf("/api/me during login errors = %d, want the usual 401", r.status)
	}
	if r := send(t, "GET", base+"/login", nil); r.status != http.StatusInternalServerError {
		t.Errorf("first /login = %d, want 500", r.status)
	}
	if r := send(t, "GET", base+"/login", nil); r.status != http.StatusOK {
		t.Errorf("second /login = %d, want 200", r.status)
	}
}
