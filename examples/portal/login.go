package portal

import (
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// Messages shown in #login-error.
const (
	msgInvalidCredentials = "Invalid username or password"
	msgAccountLocked      = "Account locked"
	msgInvalidCode        = "Invalid code"
)

// totpPeriod is the TOTP time step, in seconds.
const totpPeriod = 30

// pendingLoginTTL is how long a user has for the second login step.
const pendingLoginTTL = 5 * time.Minute

// maxFormBytes bounds the body of a login form.
const maxFormBytes = 64 << 10

// loginStep is the second factor a user is asked for after the password.
type loginStep int

const (
	stepNone loginStep = iota
	stepTOTP
	stepEmailCode
)

func stepFor(u User) loginStep {
	switch {
	case u.TOTPSecret != "":
		return stepTOTP
	case u.EmailCode:
		return stepEmailCode
	default:
		return stepNone
	}
}

func (s loginStep) path() string { return "/login/" + s.field() }

// field is the name of the form input that carries the step's code.
func (s loginStep) field() string {
	if s == stepTOTP {
		return "totp"
	}
	return "code"
}

// pendingLogin is a login whose password was right and whose second step is due.
type pendingLogin struct {
	user    string
	step    loginStep
	code    string // the emailed code, for stepEmailCode
	expires time.Time
}

func (p *Portal) handleRoot(w http.ResponseWriter, r *http.Request) {
	if _, ok := p.authenticate(w, r); ok {
		http.Redirect(w, r, "/dashboard", http.StatusFound)
		return
	}
	http.Redirect(w, r, "/login", http.StatusFound)
}

func (p *Portal) handleLoginForm(w http.ResponseWriter, r *http.Request) {
	if _, ok := p.authenticate(w, r); ok {
		http.Redirect(w, r, "/dashboard", http.StatusFound)
		return
	}
	p.render(w, http.StatusOK, p.pages.login, pageData{Title: "Sign in", CSRF: csrfToken(w, r), Banner: p.cfg.LoginBanner})
}

func (p *Portal) handleLogin(w http.ResponseWriter, r *http.Request) {
	if !p.parseForm(w, r) {
		return
	}
	username := strings.TrimSpace(r.PostFormValue("username"))
	password := r.PostFormValue("password")
	data := pageData{Title: "Sign in", CSRF: csrfToken(w, r), Username: username, Banner: p.cfg.LoginBanner}
	now := time.Now()

	p.mu.Lock()
	u, known := p.users[username]
	switch {
	case p.locked[username]:
		p.counters.FailedLogins++
		p.mu.Unlock()
		data.Error = msgAccountLocked
		p.render(w, http.StatusUnauthorized, p.pages.login, data)
		return
	case !known || subtle.ConstantTimeCompare([]byte(password), []byte(u.Password)) != 1:
		data.Error = p.recordFailure(username, known)
		p.mu.Unlock()
		p.render(w, http.StatusUnauthorized, p.pages.login, data)
		return
	}
	step := stepFor(u)
	if step == stepNone {
		p.loginSucceeded(w, username, now)
		p.mu.Unlock()
		http.Redirect(w, r, "/dashboard", http.StatusSeeOther)
		return
	}
	p.sweep(now)
	id := newToken()
	pl := &pendingLogin{user: username, step: step, expires: now.Add(pendingLoginTTL)}
	if step == stepEmailCode {
		pl.code = sixDigits()
		p.lastCodes[username] = pl.code
	}
	p.pending[id] = pl
	p.mu.Unlock()

	http.SetCookie(w, &http.Cookie{
		Name:     PendingCookie,
		Value:    id,
		Path:     "/login",
		MaxAge:   int(pendingLoginTTL.Seconds()),
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	})
	http.Redirect(w, r, step.path(), http.StatusSeeOther)
}

// handleSecondStepForm shows the TOTP or emailed-code form of a pending login.
func (p *Portal) handleSecondStepForm(step loginStep) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, pl, ok := p.pendingFor(r, step)
		if !ok {
			http.Redirect(w, r, "/login", http.StatusFound)
			return
		}
		p.render(w, http.StatusOK, p.pages.forStep(step), pageData{
			Title:    "Verify it's you",
			CSRF:     csrfToken(w, r),
			Username: pl.user,
		})
	}
}

// handleSecondStep checks the TOTP or emailed code of a pending login.
func (p *Portal) handleSecondStep(step loginStep) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !p.parseForm(w, r) {
			return
		}
		id, pl, ok := p.pendingFor(r, step)
		if !ok {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		code := strings.TrimSpace(r.PostFormValue(step.field()))
		now := time.Now()
		good, counter := p.checkCode(pl, code, now)
		data := pageData{Title: "Verify it's you", CSRF: csrfToken(w, r), Username: pl.user}

		p.mu.Lock()
		singleUse := step == stepTOTP && p.users[pl.user].SingleUseTOTP
		if good && singleUse && counter <= p.totpUsed[pl.user] {
			// RFC 6238 section 5.2: a code of a time step already accepted is refused.
			good = false
			p.log.Info("totp code of a used time step refused", "user", pl.user)
		}
		switch {
		case p.locked[pl.user]:
			p.counters.FailedLogins++
			delete(p.pending, id)
			data.Error = msgAccountLocked
		case !good:
			if data.Error = p.recordFailure(pl.user, true); data.Error == msgInvalidCredentials {
				data.Error = msgInvalidCode
			} else {
				delete(p.pending, id)
			}
		default:
			delete(p.pending, id)
			if singleUse {
				p.totpUsed[pl.user] = counter
			}
			p.loginSucceeded(w, pl.user, now)
		}
		p.mu.Unlock()

		if data.Error != "" {
			p.render(w, http.StatusUnauthorized, p.pages.forStep(step), data)
			return
		}
		clearPendingCookie(w)
		http.Redirect(w, r, "/dashboard", http.StatusSeeOther)
	}
}

// totpSkew is how many time steps before and after the current one a TOTP code may
// be from (clock drift, a code typed at the end of its step).
const totpSkew = 1

// checkCode checks the code of a pending login. For a TOTP code it also returns the
// time step the code belongs to.
func (p *Portal) checkCode(pl pendingLogin, code string, now time.Time) (ok bool, counter uint64) {
	if code == "" {
		return false, 0
	}
	if pl.step == stepEmailCode {
		return subtle.ConstantTimeCompare([]byte(code), []byte(pl.code)) == 1, 0
	}
	p.mu.Lock() // SetPassword writes p.users
	secret := p.users[pl.user].TOTPSecret
	p.mu.Unlock()
	opts := totp.ValidateOpts{Period: totpPeriod, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}
	if len(code) != opts.Digits.Length() {
		return false, 0
	}
	cur := uint64(now.Unix()) / totpPeriod
	for c := cur - totpSkew; c <= cur+totpSkew; c++ {
		want, err := totp.GenerateCodeCustom(secret, time.Unix(int64(c*totpPeriod), 0).UTC(), opts)
		if err == nil && subtle.ConstantTimeCompare([]byte(code), []byte(want)) == 1 {
			return true, c
		}
	}
	return false, 0
}

// pendingFor returns the request's pending login if it is for step and not expired.
func (p *Portal) pendingFor(r *http.Request, step loginStep) (id string, pl pendingLogin, ok bool) {
	c, err := r.Cookie(PendingCookie)
	if err != nil {
		return "", pendingLogin{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	found, ok := p.pending[c.Value]
	if !ok || found.step != step || !time.Now().Before(found.expires) {
		return "", pendingLogin{}, false
	}
	return c.Value, *found, true
}

func (p *Portal) handleLogout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil {
		p.mu.Lock()
		if ref, ok := p.sessions[c.Value]; ok {
			ref.s.revoked = true
		}
		p.mu.Unlock()
	}
	clearCookie(w, SessionCookie)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// recordFailure counts a failed login for username and locks the user after
// LockoutAfter consecutive failures. It returns the message to show. Called with p.mu
// held.
func (p *Portal) recordFailure(username string, known bool) string {
	p.counters.FailedLogins++
	if !known || p.cfg.LockoutAfter < 0 {
		return msgInvalidCredentials
	}
	p.failures[username]++
	if p.failures[username] < p.cfg.LockoutAfter {
		return msgInvalidCredentials
	}
	p.locked[username] = true
	p.counters.Lockouts++
	p.log.Info("account locked", "user", username, "failures", p.failures[username])
	return msgAccountLocked
}

// loginSucceeded completes a login: it resets the user's failures, counts it and
// starts a session. Called with p.mu held.
func (p *Portal) loginSucceeded(w http.ResponseWriter, username string, now time.Time) {
	p.failures[username] = 0
	p.counters.Logins++
	p.counters.LoginsByUser[username]++
	p.createSession(w, username, now)
	p.log.Info("login succeeded", "user", username)
}

// parseForm parses a bounded POST form and checks its CSRF token, answering 400 or
// 403 itself when it returns false.
func (p *Portal) parseForm(w http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "The form could not be read; submit it again from the login page.", http.StatusBadRequest)
		return false
	}
	c, err := r.Cookie(CSRFCookie)
	sent := r.PostFormValue("csrf_token")
	if err != nil || c.Value == "" || sent == "" || subtle.ConstantTimeCompare([]byte(sent), []byte(c.Value)) != 1 {
		p.render(w, http.StatusForbidden, p.pages.csrf, pageData{Title: "Request rejected"})
		return false
	}
	return true
}

// csrfToken returns the request's pre-login CSRF cookie value, setting a new cookie
// if there is none.
func csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(CSRFCookie); err == nil && len(c.Value) >= 26 {
		return c.Value
	}
	t := newToken()
	http.SetCookie(w, &http.Cookie{
		Name:     CSRFCookie,
		Value:    t,
		Path:     "/",
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	})
	return t
}

func clearPendingCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{
		Name: PendingCookie, Value: "", Path: "/login", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteLaxMode,
	})
}

// sixDigits returns a random 6-digit code from crypto/rand.
func sixDigits() string {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		panic(fmt.Sprintf("read crypto/rand: %v", err)) // crypto/rand never fails on Linux
	}
	return fmt.Sprintf("%06d", n.Int64())
}
