package portal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Counters are what the portal has seen since New or the last Reset.
type Counters struct {
	// Requests counts every request outside /__admin/, faulted ones included.
	Requests int64 `json:"requests"`
	// MeRequests counts the requests to /api/me among them: what the check recipe
	// calls, so a test can tell how many checks reached the site.
	MeRequests int64 `json:"me_requests"`
	// Logins counts completed logins (all steps passed, session issued).
	Logins int64 `json:"logins"`
	// FailedLogins counts rejected passwords and second-factor codes, including
	// attempts on locked accounts.
	FailedLogins int64 `json:"failed_logins"`
	// Lockouts counts accounts locked by too many failures.
	Lockouts int64 `json:"lockouts"`
	// Faults counts requests answered by an injected fault (429, 500 or 503).
	Faults int64 `json:"faults"`
	// ActiveSessions is the number of sessions currently valid.
	ActiveSessions int `json:"active_sessions"`
	// LoginsByUser counts completed logins per username.
	LoginsByUser map[string]int64 `json:"logins_by_user"`
	// RequestsByTag counts requests by the value of their "tag" query parameter
	// (/invoices?tag=r-17), so a test whose recipe passes one tag per Run can tell how
	// often each Run reached the site. Nil until a tagged request arrives.
	RequestsByTag map[string]int64 `json:"requests_by_tag,omitempty"`
}

// Fault is the failure the portal injects into requests outside /__admin/. The zero
// Fault injects nothing. Its JSON form, used by POST /__admin/fault, is
//
//	{"too_many_requests": 3, "retry_after_seconds": 2, "server_errors": 0,
//	 "down": false, "delay": "250ms"}
type Fault struct {
	// TooManyRequests makes the next N requests answer 429 with a Retry-After header.
	TooManyRequests int
	// ServerErrors makes the next N requests (after any 429s) answer 500.
	ServerErrors int
	// Down makes every request answer 503 with a Retry-After header until cleared.
	Down bool
	// RetryAfterSeconds is the Retry-After value of 429 and 503 answers. Default 1.
	RetryAfterSeconds int
	// Delay holds every request this long before it is answered.
	Delay time.Duration
	// LoginErrors makes the next N requests to /login answer 500 while every other
	// page works: a login that fails for a passing reason, with the site otherwise up.
	LoginErrors int
}

type faultJSON struct {
	TooManyRequests   int    `json:"too_many_requests"`
	ServerErrors      int    `json:"server_errors"`
	Down              bool   `json:"down"`
	RetryAfterSeconds int    `json:"retry_after_seconds"`
	Delay             string `json:"delay,omitempty"`
	LoginErrors       int    `json:"login_errors,omitempty"`
}

// MarshalJSON encodes f with snake_case keys and Delay as a Go duration string.
func (f Fault) MarshalJSON() ([]byte, error) {
	j := faultJSON{f.TooManyRequests, f.ServerErrors, f.Down, f.RetryAfterSeconds, "", f.LoginErrors}
	if f.Delay > 0 {
		j.Delay = f.Delay.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes the form MarshalJSON writes, rejecting unknown keys and
// negative values.
func (f *Fault) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var j faultJSON
	if err := dec.Decode(&j); err != nil {
		return err
	}
	var d time.Duration
	if j.Delay != "" {
		var err error
		if d, err = time.ParseDuration(j.Delay); err != nil {
			return fmt.Errorf("delay %q is not a duration like \"250ms\"", j.Delay)
		}
	}
	if j.TooManyRequests < 0 || j.ServerErrors < 0 || j.LoginErrors < 0 || j.RetryAfterSeconds < 0 || d < 0 {
		return errors.New("counts, retry_after_seconds and delay must not be negative")
	}
	*f = Fault{j.TooManyRequests, j.ServerErrors, j.Down, j.RetryAfterSeconds, d, j.LoginErrors}
	return nil
}

// Counters returns a snapshot of the counters.
func (p *Portal) Counters() Counters {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.counters
	c.LoginsByUser = maps.Clone(p.counters.LoginsByUser)
	c.RequestsByTag = maps.Clone(p.counters.RequestsByTag)
	seen := make(map[*session]bool)
	for _, ref := range p.sessions {
		if ref.s.valid(now) {
			seen[ref.s] = true
		}
	}
	c.ActiveSessions = len(seen)
	return c
}

// SetFault replaces the injected fault; SetFault(Fault{}) clears it.
func (p *Portal) SetFault(f Fault) {
	p.mu.Lock()
	p.fault = f
	p.mu.Unlock()
	p.log.Info("fault set", "too_many_requests", f.TooManyRequests, "server_errors", f.ServerErrors,
		"down", f.Down, "delay", f.Delay)
}

// CurrentFault returns the injected fault, with the counts that are left.
func (p *Portal) CurrentFault() Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fault
}

// ExpireSessions invalidates every session, API token and half-finished login
// server-side, as if they had all timed out.
func (p *Portal) ExpireSessions() {
	p.mu.Lock()
	clear(p.sessions)
	clear(p.apiTokens)
	clear(p.pending)
	p.mu.Unlock()
	p.log.Info("all sessions expired")
}

// Reset zeroes the counters, unlocks every user, forgets failed attempts and clears
// the fault. Sessions and sent codes are kept.
func (p *Portal) Reset() {
	p.mu.Lock()
	p.counters = Counters{LoginsByUser: map[string]int64{}}
	clear(p.failures)
	clear(p.locked)
	p.fault = Fault{}
	p.mu.Unlock()
	p.log.Info("portal reset")
}

// LastCode returns the last one-time code "emailed" to username.
func (p *Portal) LastCode(username string) (code string, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	code, ok = p.lastCodes[username]
	return code, ok
}

// injectFault counts the request and answers it with the injected fault, if any. It
// reports whether it answered.
func (p *Portal) injectFault(w http.ResponseWriter, r *http.Request) bool {
	p.mu.Lock()
	p.counters.Requests++
	if r.URL.Path == "/api/me" {
		p.counters.MeRequests++
	}
	if tag := r.URL.Query().Get("tag"); tag != "" {
		if p.counters.RequestsByTag == nil {
			p.counters.RequestsByTag = map[string]int64{}
		}
		p.counters.RequestsByTag[tag]++
	}
	f := &p.fault
	status := 0
	switch {
	case f.Down:
		status = http.StatusServiceUnavailable
	case f.LoginErrors > 0 && r.URL.Path == "/login":
		f.LoginErrors--
		status = http.StatusInternalServerError
	case f.TooManyRequests > 0:
		f.TooManyRequests--
		status = http.StatusTooManyRequests
	case f.ServerErrors > 0:
		f.ServerErrors--
		status = http.StatusInternalServerError
	}
	if status != 0 {
		p.counters.Faults++
	}
	delay, retryAfter := f.Delay, f.RetryAfterSeconds
	p.mu.Unlock()

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return true // the client is gone
		}
	}
	if status == 0 {
		return false
	}
	if retryAfter <= 0 {
		retryAfter = 1
	}
	if status != http.StatusInternalServerError {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	text := strings.ToLower(http.StatusText(status))
	if strings.HasPrefix(r.URL.Path, "/api/") {
		writeJSON(w, status, map[string]string{"error": text})
		return true
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, "<!doctype html><title>%d</title><h1 id=\"error\">%d %s</h1>\n", status, status, http.StatusText(status))
	return true
}

func (p *Portal) handleAdminCounters(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, p.Counters())
}

func (p *Portal) handleAdminReset(w http.ResponseWriter, _ *http.Request) {
	p.Reset()
	w.WriteHeader(http.StatusNoContent)
}

func (p *Portal) handleAdminExpireSessions(w http.ResponseWriter, _ *http.Request) {
	p.ExpireSessions()
	w.WriteHeader(http.StatusNoContent)
}

func (p *Portal) handleAdminGetFault(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, p.CurrentFault())
}

func (p *Portal) handleAdminSetFault(w http.ResponseWriter, r *http.Request) {
	var f Fault
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxFormBytes)).Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("empty body")
		}
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid fault: " + err.Error() +
			`; send JSON like {"too_many_requests":3,"server_errors":0,"down":false,"retry_after_seconds":1,"delay":"250ms"}`})
		return
	}
	p.SetFault(f)
	writeJSON(w, http.StatusOK, f)
}

func (p *Portal) handleAdminLastCode(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	if user == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "missing ?user=<username>"})
		return
	}
	code, ok := p.LastCode(user)
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no code sent to " + user})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"user": user, "code": code})
}
