// Package portal is the Latchkey demo portal: a small login-protected web app that
// tests and the demo use as the target of browser automations.
//
// It behaves like real sites do: a login form guarded by a CSRF token, account lockout
// after repeated failures, a second factor for some users, an HttpOnly session cookie
// that expires server-side and rotates on every request, and an API token that the
// dashboard keeps in localStorage. Automations therefore have to save and restore
// cookies and localStorage to stay logged in.
//
// The default users (see DefaultUsers) are:
//
//	alice / wonderland  password only
//	bob   / builder     password, then a TOTP code for BobTOTPSecret
//	carol / caroline    password, then a 6-digit code "sent by email", readable from
//	                    GET /__admin/last-code?user=carol
//	erin  / engineer    password, then a single-use TOTP code for ErinTOTPSecret: a
//	                    code whose time step was already accepted is refused
//	                    (RFC 6238 section 5.2)
//
// Pages: GET /login, POST /login, /login/totp, /login/code, POST /logout, /dashboard,
// /invoices, /account. API: GET /api/me, GET /api/token, GET /api/whoami. /account and
// /api/whoami answer a logged-out request as many real sites do: a 302 to the login
// page, and a 200 with an error in the JSON body. Everything under /__admin/ is test-only
// and unauthenticated on purpose (counters, fault injection, session expiry, reset);
// never expose the portal beyond a test machine.
//
// A failed login answers 401 Unauthorized with the form and a #login-error element
// ("Invalid username or password", "Account locked" or "Invalid code"); a POST without
// a valid CSRF token answers 403 Forbidden.
package portal

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// The default users and their secrets, documented so tests and recipes can log in.
const (
	AliceUsername = "alice"
	AlicePassword = "wonderland"
	BobUsername   = "bob"
	BobPassword   = "builder"
	CarolUsername = "carol"
	CarolPassword = "caroline"
	ErinUsername  = "erin"
	ErinPassword  = "engineer"
	// BobTOTPSecret is bob's base32 TOTP secret (SHA1, 6 digits, 30 s period), usable
	// with github.com/pquerna/otp/totp.GenerateCode.
	BobTOTPSecret = "LATCHKEYDEMOBOBTOTPSECRET2345672"
	// ErinTOTPSecret is erin's base32 TOTP secret (SHA1, 6 digits, 30 s period). Erin's
	// codes are single-use: once a code of a time step was accepted, no code of that
	// step or an earlier one is.
	ErinTOTPSecret = "LATCHKEYDEMOERINTOTPSECRET234567"
)

// Defaults applied by New to zero-valued Config fields.
const (
	DefaultSessionTTL    = 30 * time.Minute
	DefaultLockoutAfter  = 5
	DefaultRotationGrace = 30 * time.Second
)

// Cookie names set by the portal.
const (
	// SessionCookie holds the session token after a complete login.
	SessionCookie = "portal_session"
	// CSRFCookie is the pre-login cookie whose value the forms must echo in csrf_token.
	CSRFCookie = "portal_csrf"
	// PendingCookie ties the second login step (TOTP or emailed code) to the first.
	PendingCookie = "portal_pending"
)

// User is an account of the portal. A user with a TOTPSecret is asked for a TOTP code
// after the password; otherwise a user with EmailCode is asked for a one-time code
// "sent by email" (readable from GET /__admin/last-code).
type User struct {
	Username   string `json:"username"`
	Password   string `json:"password"`
	TOTPSecret string `json:"totp_secret,omitempty"`
	EmailCode  bool   `json:"email_code,omitempty"`
	// SingleUseTOTP refuses a TOTP code whose time step is not later than the last
	// one accepted for the user, as RFC 6238 section 5.2 asks: a code works once.
	SingleUseTOTP bool `json:"single_use_totp,omitempty"`
}

// String returns the username only, so a User never prints its password or secret.
func (u User) String() string { return u.Username }

// LogValue redacts the password and secret when a User is logged with slog.
func (u User) LogValue() slog.Value { return slog.StringValue(u.Username) }

// DefaultUsers returns alice (password only), bob (TOTP), carol (emailed code) and
// erin (single-use TOTP).
func DefaultUsers() []User {
	return []User{
		{Username: AliceUsername, Password: AlicePassword},
		{Username: BobUsername, Password: BobPassword, TOTPSecret: BobTOTPSecret},
		{Username: CarolUsername, Password: CarolPassword, EmailCode: true},
		{Username: ErinUsername, Password: ErinPassword, TOTPSecret: ErinTOTPSecret, SingleUseTOTP: true},
	}
}

// Config configures a Portal. Zero-valued fields take the defaults documented on
// each field.
type Config struct {
	// SessionTTL is how long a session lives without use, enforced server-side and
	// sent as the cookie's Max-Age. Default DefaultSessionTTL (30m).
	SessionTTL time.Duration
	// LockoutAfter is the number of consecutive failed logins (wrong password or
	// wrong second-factor code) after which a user is locked until POST
	// /__admin/reset. Default DefaultLockoutAfter (5); negative disables lockout.
	LockoutAfter int
	// Users are the accounts. Default DefaultUsers().
	Users []User
	// DisableCookieRotation turns cookie rotation off. By default (rotation on) every
	// authenticated page or API request answers with a fresh session cookie value and
	// slides the expiry forward by SessionTTL; the previous value stays valid for
	// RotationGrace so concurrent requests don't break, like refresh-token rotation.
	// With rotation off the cookie keeps its value and the session expires SessionTTL
	// after login.
	DisableCookieRotation bool
	// RotationGrace is how long a rotated-out cookie value stays valid. Default
	// DefaultRotationGrace (30s).
	RotationGrace time.Duration
	// LoginBanner, if set, is shown on the login page in a visible alert
	// (#site-notice, class "error", role "alert"), as sites announce maintenance: an
	// element a recipe looking for an error after submitting the form would find on
	// the page it is leaving if it did not wait for the navigation. Default: none.
	LoginBanner string
	// Logger receives login and admin events (never passwords, codes or tokens).
	// Default: discard.
	Logger *slog.Logger
}

// Portal is the demo portal. It implements http.Handler and is safe for concurrent
// use. Create it with New.
type Portal struct {
	cfg   Config
	users map[string]User
	log   *slog.Logger
	mux   *http.ServeMux
	pages pages

	mu        sync.Mutex // guards everything below
	sessions  map[string]*sessionRef
	apiTokens map[string]*session
	pending   map[string]*pendingLogin
	failures  map[string]int  // consecutive failed logins per user
	locked    map[string]bool // users locked out
	lastCodes map[string]string
	// totpUsed is the last TOTP time step accepted per SingleUseTOTP user.
	totpUsed  map[string]uint64
	counters  Counters
	fault     Fault
	lastSweep time.Time

	srvMu sync.Mutex // guards srv and done; never held together with mu
	srv   *http.Server
	done  chan struct{}
}

// New returns a Portal for cfg with defaults applied to zero-valued fields.
func New(cfg Config) *Portal {
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.LockoutAfter == 0 {
		cfg.LockoutAfter = DefaultLockoutAfter
	}
	if cfg.Users == nil {
		cfg.Users = DefaultUsers()
	}
	if cfg.RotationGrace <= 0 {
		cfg.RotationGrace = DefaultRotationGrace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Portal{
		cfg:       cfg,
		users:     make(map[string]User, len(cfg.Users)),
		log:       cfg.Logger,
		pages:     parsePages(),
		sessions:  make(map[string]*sessionRef),
		apiTokens: make(map[string]*session),
		pending:   make(map[string]*pendingLogin),
		failures:  make(map[string]int),
		locked:    make(map[string]bool),
		lastCodes: make(map[string]string),
		totpUsed:  make(map[string]uint64),
		counters:  Counters{LoginsByUser: map[string]int64{}},
	}
	for _, u := range cfg.Users {
		p.users[u.Username] = u
	}
	p.mux = p.routes()
	return p
}

func (p *Portal) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", p.handleRoot)
	mux.HandleFunc("GET /login", p.handleLoginForm)
	mux.HandleFunc("POST /login", p.handleLogin)
	mux.HandleFunc("GET /login/totp", p.handleSecondStepForm(stepTOTP))
	mux.HandleFunc("POST /login/totp", p.handleSecondStep(stepTOTP))
	mux.HandleFunc("GET /login/code", p.handleSecondStepForm(stepEmailCode))
	mux.HandleFunc("POST /login/code", p.handleSecondStep(stepEmailCode))
	mux.HandleFunc("POST /logout", p.handleLogout)
	mux.HandleFunc("GET /dashboard", p.handleDashboard)
	mux.HandleFunc("GET /invoices", p.handleInvoices)
	mux.HandleFunc("GET /api/me", p.handleAPIMe)
	mux.HandleFunc("GET /api/token", p.handleAPIToken)
	mux.HandleFunc("GET /account", p.handleAccount)
	mux.HandleFunc("GET /api/whoami", p.handleAPIWhoami)
	mux.HandleFunc("GET /browser-check", p.handleBrowserCheck)
	mux.HandleFunc("GET /spa", p.handleSPA)

	mux.HandleFunc("GET /__admin/counters", p.handleAdminCounters)
	mux.HandleFunc("POST /__admin/reset", p.handleAdminReset)
	mux.HandleFunc("POST /__admin/expire-sessions", p.handleAdminExpireSessions)
	mux.HandleFunc("GET /__admin/fault", p.handleAdminGetFault)
	mux.HandleFunc("POST /__admin/fault", p.handleAdminSetFault)
	mux.HandleFunc("GET /__admin/last-code", p.handleAdminLastCode)
	return mux
}

// ServeHTTP serves the portal. Requests outside /__admin/ are counted and subject to
// the injected Fault.
func (p *Portal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/__admin/") && p.injectFault(w, r) {
		return
	}
	p.mux.ServeHTTP(w, r)
}

// Start serves the portal on addr (for example "127.0.0.1:0") in the background and
// returns its base URL, such as "http://127.0.0.1:41234". Stop it with Close.
func (p *Portal) Start(addr string) (url string, err error) {
	p.srvMu.Lock()
	defer p.srvMu.Unlock()
	if p.srv != nil {
		return "", errors.New("start portal: already started")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("start portal: %w", err)
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	p.done = make(chan struct{})
	go func(srv *http.Server, done chan struct{}) {
		defer close(done)
		_ = srv.Serve(ln) // always returns http.ErrServerClosed after Close
	}(p.srv, p.done)
	return "http://" + ln.Addr().String(), nil
}

// Close stops a portal started with Start, closing its listener and connections, and
// waits for the server goroutine to exit. It is a no-op if the portal is not started.
func (p *Portal) Close() error {
	p.srvMu.Lock()
	defer p.srvMu.Unlock()
	if p.srv == nil {
		return nil
	}
	err := p.srv.Close()
	<-p.done
	p.srv, p.done = nil, nil
	if err != nil {
		return fmt.Errorf("close portal: %w", err)
	}
	return nil
}
