package engine

import (
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
)

// authProxy is a forward HTTP proxy that wants user:pass and counts what it forwards.
func authProxy(t *testing.T, user, pass string) (string, *atomic.Int64) {
	t.Helper()
	var forwarded atomic.Int64
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Proxy-Authorization") != want {
			w.Header().Set("Proxy-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusProxyAuthRequired)
			return
		}
		out, err := http.NewRequestWithContext(r.Context(), r.Method, r.URL.String(), r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		out.Header = r.Header.Clone()
		out.Header.Del("Proxy-Authorization")
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		forwarded.Add(1)
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &forwarded
}

// TestProxyPinnedToSession: a session's proxy carries every request of its context,
// with the proxy password from the vault; a session without one goes direct.
func TestProxyPinnedToSession(t *testing.T) {
	t.Parallel()
	_, base := portaltest.Start(t, portal.Config{})
	proxyURL, forwarded := authProxy(t, "pu", "proxy-secret")
	b := newTestBackend(t, portalBundle(t))
	b.secrets[project+"/proxy-s1"] = map[string]string{"password": "proxy-secret"}
	for _, s := range []string{"s1", "s2"} {
		b.vars[project+"/"+s] = map[string]string{"baseURL": base}
		b.putState(t, project, s, 1, loggedInState(t, base, portal.User{Username: "alice", Password: portal.AlicePassword}))
	}
	r := newTestRunner(t, Config{}, b, Deps{})
	tk := task(runnerv1.TaskKind_TASK_KIND_CHECK, recipe.CheckAPI, project, "s1", 1, nil)
	tk.Session.Proxy = &latchkeyv1.Proxy{Server: proxyURL, Username: "pu"}
	res := r.Execute(t.Context(), tk)
	if res.GetCheckOutcome() != outcomeValid {
		t.Fatalf("check through the proxy: %s %s", res.GetCheckOutcome(), res.GetFailureMessage())
	}
	if forwarded.Load() == 0 {
		t.Fatal("the proxy forwarded nothing")
	}
	n := forwarded.Load()
	if res := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_CHECK, recipe.CheckAPI, project, "s2", 1, nil)); res.GetCheckOutcome() != outcomeValid {
		t.Fatalf("check without a proxy: %s", res.GetFailureMessage())
	}
	if forwarded.Load() != n {
		t.Error("a session without a proxy went through another session's proxy")
	}
}
