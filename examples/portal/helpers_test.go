package portal_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// response is a fully read HTTP response.
type response struct {
	status  int
	header  http.Header
	body    string
	cookies map[string]*http.Cookie // from Set-Cookie, by name
}

// rawClient follows no redirects and keeps no cookies, so tests see exactly what
// the portal answers.
var rawClient = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

type reqOption func(*http.Request)

func withCookies(cs ...*http.Cookie) reqOption {
	return func(r *http.Request) {
		for _, c := range cs {
			r.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
	}
}

func withBearer(token string) reqOption {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
}

func withHeader(k, v string) reqOption {
	return func(r *http.Request) { r.Header.Set(k, v) }
}

// trySend sends one request with rawClient; safe to call from any goroutine.
func trySend(method, rawURL string, form url.Values, opts ...reqOption) (response, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		return response{}, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := rawClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("read body of %s %s: %w", method, rawURL, err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, body: string(b), cookies: map[string]*http.Cookie{}}
	for _, c := range resp.Cookies() {
		r.cookies[c.Name] = c
	}
	return r, nil
}

func send(tb testing.TB, method, rawURL string, form url.Values, opts ...reqOption) response {
	tb.Helper()
	r, err := trySend(method, rawURL, form, opts...)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, rawURL, err)
	}
	return r
}

var csrfField = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

// tryLogin submits the login form with a fresh pre-login cookie and returns the
// response to the POST together with the CSRF cookie it used.
func tryLogin(base, username, password string) (response, *http.Cookie, error) {
	page, err := trySend("GET", base+"/login", nil)
	if err != nil {
		return response{}, nil, err
	}
	csrf := page.cookies[portal.CSRFCookie]
	m := csrfField.FindStringSubmatch(page.body)
	if csrf == nil || m == nil {
		return response{}, nil, fmt.Errorf("login page: no %s cookie or csrf_token field (status %d)", portal.CSRFCookie, page.status)
	}
	r, err := trySend("POST", base+"/login",
		url.Values{"csrf_token": {m[1]}, "username": {username}, "password": {password}},
		withCookies(csrf))
	return r, csrf, err
}

// trySessionCookie logs a password-only user in and returns the session cookie.
func trySessionCookie(base, username, password string) (*http.Cookie, error) {
	r, _, err := tryLogin(base, username, password)
	if err != nil {
		return nil, err
	}
	c := r.cookies[portal.SessionCookie]
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/dashboard" || c == nil {
		return nil, fmt.Errorf("log in as %s: status %d, location %q, session cookie %v",
			username, r.status, r.header.Get("Location"), c != nil)
	}
	return c, nil
}

func sessionCookie(tb testing.TB, base, username, password string) *http.Cookie {
	tb.Helper()
	c, err := trySessionCookie(base, username, password)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func startPortal(tb testing.TB, cfg portal.Config) (*portal.Portal, string) {
	tb.Helper()
	return portaltest.Start(tb, cfg)
}

// decodeJSON decodes a response body, failing tb if it isn't JSON.
func decodeJSON[T any](tb testing.TB, r response) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		tb.Fatalf("decode JSON %q: %v", r.body, err)
	}
	return v
}

// loginError returns the text of the page's #login-error element, or "".
func loginError(body string) string {
	m := regexp.MustCompile(`id="login-error"[^>]*>([^<]*)<`).FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return m[1]
}
