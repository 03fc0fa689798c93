package portal

import (
	"crypto/rand"
	"math"
	"net/http"
	"strings"
	"time"
)

// session is one logged-in browser. Its cookie value changes on rotation; every
// value it has had maps to it through a sessionRef.
type session struct {
	user           string
	expires        time.Time
	current        string // the cookie value handed out last
	apiToken       string // the bearer token the dashboard keeps in localStorage
	tokenDelivered bool   // whether the dashboard has rendered apiToken once
	revoked        bool   // logged out
}

func (s *session) valid(now time.Time) bool { return !s.revoked && now.Before(s.expires) }

// sessionRef is one cookie value of a session. A value that rotation replaced stays
// valid until retiresAt.
type sessionRef struct {
	s         *session
	retiresAt time.Time // zero while this is the session's current value
}

// newToken returns 256 bits from crypto/rand as 52 base32 characters. Tokens are
// never logged.
func newToken() string { return rand.Text() + rand.Text() }

// createSession starts a session for user and sets its cookie. Called with p.mu held.
func (p *Portal) createSession(w http.ResponseWriter, user string, now time.Time) {
	p.sweep(now)
	s := &session{
		user:     user,
		expires:  now.Add(p.cfg.SessionTTL),
		current:  newToken(),
		apiToken: newToken(),
	}
	p.sessions[s.current] = &sessionRef{s: s}
	p.apiTokens[s.apiToken] = s
	p.setSessionCookie(w, s.current)
}

// authenticate returns the session of the request's session cookie. With rotation on
// it hands out a fresh cookie value and slides the expiry; a stale or unknown cookie
// is cleared. The session's user and apiToken never change and may be read without
// p.mu.
func (p *Portal) authenticate(w http.ResponseWriter, r *http.Request) (s *session, ok bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return nil, false
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	ref, found := p.sessions[c.Value]
	if !found || !ref.s.valid(now) || (!ref.retiresAt.IsZero() && !now.Before(ref.retiresAt)) {
		if found {
			delete(p.sessions, c.Value)
		}
		clearCookie(w, SessionCookie)
		return nil, false
	}
	s = ref.s
	if !p.cfg.DisableCookieRotation {
		if ref.retiresAt.IsZero() {
			p.sweep(now)
			ref.retiresAt = now.Add(p.cfg.RotationGrace)
			s.current = newToken()
			p.sessions[s.current] = &sessionRef{s: s}
		}
		s.expires = now.Add(p.cfg.SessionTTL)
		p.setSessionCookie(w, s.current)
	}
	return s, true
}

// authenticateBearer returns the user of an "Authorization: Bearer" API token. present
// reports whether the header was sent at all.
func (p *Portal) authenticateBearer(r *http.Request) (user string, present, ok bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false, false
	}
	scheme, token, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", true, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s, found := p.apiTokens[token]
	if !found || !s.valid(time.Now()) {
		return "", true, false
	}
	return s.user, true, true
}

// sweep drops expired and retired cookie values and tokens, at most once a second.
// Called with p.mu held.
func (p *Portal) sweep(now time.Time) {
	if now.Sub(p.lastSweep) < time.Second {
		return
	}
	p.lastSweep = now
	for v, ref := range p.sessions {
		if !ref.s.valid(now) || (!ref.retiresAt.IsZero() && !now.Before(ref.retiresAt)) {
			delete(p.sessions, v)
		}
	}
	for t, s := range p.apiTokens {
		if !s.valid(now) {
			delete(p.apiTokens, t)
		}
	}
	for id, pl := range p.pending {
		if !now.Before(pl.expires) {
			delete(p.pending, id)
		}
	}
}

func (p *Portal) setSessionCookie(w http.ResponseWriter, value string) {
	ttl := p.cfg.SessionTTL
	http.SetCookie(w, &http.Cookie{
		Name:     SessionCookie,
		Value:    value,
		Path:     "/",
		MaxAge:   int(math.Ceil(ttl.Seconds())),
		Expires:  time.Now().Add(ttl),
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	})
}

func clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{
		Name:     name,
		Value:    "",
		Path:     "/",
		MaxAge:   -1,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	})
}
