package portal

import (
	"fmt"
	"html"
	"net/http"
	"strings"
)

// Pages that answer a logged-out request the way many real sites do, rather than with
// the 401 of /api/me: a recipe's cheap HTTP check has to look past the status to tell.

// accountLoginURL is where /account sends a logged-out browser.
const accountLoginURL = "/login?next=%2Faccount"

// handleAccount shows the account page, or, logged out, answers 302 to the login page
// (which answers 200): the status alone says nothing.
func (p *Portal) handleAccount(w http.ResponseWriter, r *http.Request) {
	s, ok := p.authenticate(w, r)
	if !ok {
		http.Redirect(w, r, accountLoginURL, http.StatusFound)
		return
	}
	p.render(w, http.StatusOK, p.pages.account, pageData{Title: "Account", Username: s.user})
}

// handleAPIWhoami always answers 200, as JSON APIs behind some gateways do:
// {"success": true, "user": {"username": ...}} logged in, and
// {"success": false, "error": {"code": "denied", ...}} logged out.
func (p *Portal) handleAPIWhoami(w http.ResponseWriter, r *http.Request) {
	s, ok := p.authenticate(w, r)
	if !ok {
		writeJSON(w, http.StatusOK, map[string]any{
			"success": false,
			"error":   map[string]string{"code": "denied", "message": "Sign in to continue"},
		})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "user": map[string]string{"username": s.user}})
}

// handleBrowserCheck refuses browsers that say they are automated, as many sites do:
// a User-Agent with "HeadlessChrome" (or none) gets 403. Others get a page showing
// what they sent.
func (p *Portal) handleBrowserCheck(w http.ResponseWriter, r *http.Request) {
	ua := r.UserAgent()
	if ua == "" || strings.Contains(ua, "HeadlessChrome") {
		http.Error(w, "automated browsers are not allowed", http.StatusForbidden)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprintf(w, `<!doctype html><title>Browser check</title><p id="browser-ok">Welcome</p><p id="ua">%s</p><p id="lang">%s</p>`,
		html.EscapeString(ua), html.EscapeString(r.Header.Get("Accept-Language")))
}

// handleSPA is a single-page app that keeps its tokens where many SPAs do: one in
// sessionStorage ("sessionToken") and one in IndexedDB (database "app", store
// "tokens", record {id: "auth", token}). Its script runs as the page loads and shows
// what it found in #session-token and #idb-token (empty when missing), then counts the
// visit in IndexedDB (record {id: "visits", n}, shown in #visits) and sets #ready.
func (p *Portal) handleSPA(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprint(w, `<!doctype html><title>SPA</title>
<p>session token: <span id="session-token"></span></p>
<p>IndexedDB token: <span id="idb-token"></span></p>
<p>visits: <span id="visits"></span></p>
<script>
document.getElementById('session-token').textContent = sessionStorage.getItem('sessionToken') || '';
const open = indexedDB.open('app', 1);
open.onupgradeneeded = () => open.result.createObjectStore('tokens', {keyPath: 'id'});
open.onsuccess = () => {
  const store = open.result.transaction('tokens', 'readwrite').objectStore('tokens');
  const auth = store.get('auth');
  auth.onsuccess = () => { document.getElementById('idb-token').textContent = auth.result ? auth.result.token : ''; };
  const visits = store.get('visits');
  visits.onsuccess = () => {
    const n = (visits.result ? visits.result.n : 0) + 1;
    store.put({id: 'visits', n});
    document.getElementById('visits').textContent = String(n);
  };
  store.transaction.oncomplete = () => { const e = document.createElement('p'); e.id = 'ready'; e.textContent = 'ready'; document.body.append(e); };
};
</script>`)
}
