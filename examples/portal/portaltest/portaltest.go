// Package portaltest starts the demo portal in-process and logs in to it, for tests.
package portaltest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/latchkey/latchkey/examples/portal"
)

// Start serves a new Portal for cfg on an httptest server bound to 127.0.0.1 and
// returns it with its base URL (no trailing slash). The server closes in tb.Cleanup.
func Start(tb testing.TB, cfg portal.Config) (*portal.Portal, string) {
	tb.Helper()
	p := portal.New(cfg)
	srv := httptest.NewServer(p)
	tb.Cleanup(srv.Close)
	return p, srv.URL
}

// NewClient returns an HTTP client with its own cookie jar that follows redirects.
func NewClient(tb testing.TB) *http.Client {
	tb.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		tb.Fatalf("new cookie jar: %v", err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second}
}

var csrfField = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

// Login logs u in to the portal at baseURL through the login form, including the
// TOTP step (codes from u.TOTPSecret) or the emailed-code step (code read from GET
// /__admin/last-code), and returns a client whose jar holds the session cookie.
func Login(tb testing.TB, baseURL string, u portal.User) *http.Client {
	tb.Helper()
	c := NewClient(tb)
	body := Get(tb, c, baseURL+"/login")
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		tb.Fatalf("login page has no csrf_token field:\n%s", body)
	}
	csrf := m[1]
	resp := PostForm(tb, c, baseURL+"/login", url.Values{
		"csrf_token": {csrf}, "username": {u.Username}, "password": {u.Password},
	})
	switch resp.Request.URL.Path {
	case "/login/totp":
		code, err := totp.GenerateCode(u.TOTPSecret, time.Now())
		if err != nil {
			tb.Fatalf("generate TOTP code for %s: %v", u.Username, err)
		}
		resp = PostForm(tb, c, baseURL+"/login/totp", url.Values{"csrf_token": {csrf}, "totp": {code}})
	case "/login/code":
		resp = PostForm(tb, c, baseURL+"/login/code", url.Values{
			"csrf_token": {csrf}, "code": {LastCode(tb, baseURL, u.Username)},
		})
	}
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/dashboard" {
		tb.Fatalf("log in as %s: ended at %s with status %d", u.Username, resp.Request.URL.Path, resp.StatusCode)
	}
	return c
}

// LastCode returns the one-time code last "emailed" to username.
func LastCode(tb testing.TB, baseURL, username string) string {
	tb.Helper()
	resp, err := http.Get(baseURL + "/__admin/last-code?user=" + url.QueryEscape(username))
	if err != nil {
		tb.Fatalf("get last code: %v", err)
	}
	defer resp.Body.Close()
	var out struct{ Code string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("get last code for %s: status %d, decode error %v", username, resp.StatusCode, err)
	}
	return out.Code
}

// Get fetches rawURL with c and returns the body, failing tb on a transport error.
func Get(tb testing.TB, c *http.Client, rawURL string) string {
	tb.Helper()
	resp, err := c.Get(rawURL)
	if err != nil {
		tb.Fatalf("GET %s: %v", rawURL, err)
	}
	return readBody(tb, resp)
}

// PostForm posts form to rawURL with c and returns the response with its body
// already read and closed, failing tb on a transport error.
func PostForm(tb testing.TB, c *http.Client, rawURL string, form url.Values) *http.Response {
	tb.Helper()
	resp, err := c.PostForm(rawURL, form)
	if err != nil {
		tb.Fatalf("POST %s: %v", rawURL, err)
	}
	readBody(tb, resp)
	return resp
}

func readBody(tb testing.TB, resp *http.Response) string {
	tb.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read body of %s: %v", resp.Request.URL, err)
	}
	return string(b)
}
