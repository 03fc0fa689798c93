package api

import (
	"fmt"
	"net/url"
	"regexp"
	"time"

	"github.com/latchkey/latchkey/libs/errs"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/services/session-registry/internal/store"
)

// Limits of what a session carries besides its state.
const (
	MaxLabels          = 32
	MaxLabelValue      = 256
	MaxVars            = 64
	MaxVarValue        = 4096
	MaxCredentials     = 32
	MaxCredentialBytes = 8192
	MinKeepAlive       = 15 * time.Second
	MaxKeepAlive       = 30 * 24 * time.Hour
)

var (
	labelKeyRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._/-]{0,61}[a-zA-Z0-9])?$`)
	fieldRE    = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]{0,63}$`)
)

func invalid(format string, args ...any) error { return errs.New(errs.ErrInvalid, format, args...) }

func checkLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return invalid("%d labels, at most %d are allowed", len(labels), MaxLabels)
	}
	for k, v := range labels {
		if !labelKeyRE.MatchString(k) {
			return invalid("label key %.80q is not valid: use 1-63 letters, digits, '.', '_', '/' and '-', starting and ending with a letter or digit", k)
		}
		if len(v) > MaxLabelValue {
			return invalid("label %q: the value is longer than %d bytes", k, MaxLabelValue)
		}
	}
	return nil
}

func checkVars(vars map[string]string) error {
	if len(vars) > MaxVars {
		return invalid("%d vars, at most %d are allowed", len(vars), MaxVars)
	}
	for k, v := range vars {
		if !fieldRE.MatchString(k) {
			return invalid("var name %.80q is not valid: use a letter or '_' then letters, digits and '_' (it is used as .Vars.NAME in templates)", k)
		}
		if len(v) > MaxVarValue {
			return invalid("var %q: the value is longer than %d bytes", k, MaxVarValue)
		}
	}
	return nil
}

// checkCredentials checks field names and sizes; its messages never quote a value.
func checkCredentials(creds map[string]string) error {
	if len(creds) == 0 {
		return invalid("credentials are required: the named fields the create automation uses, such as username and password")
	}
	if len(creds) > MaxCredentials {
		return invalid("%d credential fields, at most %d are allowed", len(creds), MaxCredentials)
	}
	for k, v := range creds {
		if !fieldRE.MatchString(k) {
			return invalid("credential field name %.80q is not valid: use a letter or '_' then letters, digits and '_'", k)
		}
		if len(v) > MaxCredentialBytes {
			return invalid("credential field %q is longer than %d bytes", k, MaxCredentialBytes)
		}
	}
	return nil
}

// localeRE is a BCP 47 language tag as browsers take it: a language, then subtags.
var localeRE = regexp.MustCompile(`^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$`)

// checkBrowser refuses an identity a browser could not send: a User-Agent with
// control or non-ASCII characters (it is a header), or a locale that is not a tag.
func checkBrowser(b *latchkeyv1.BrowserIdentity) error {
	if b == nil {
		return nil
	}
	ua := b.GetUserAgent()
	if len(ua) > 512 {
		return invalid("browser.user_agent is longer than 512 characters")
	}
	for _, r := range ua {
		if r < 0x20 || r > 0x7e {
			return invalid("browser.user_agent must be printable ASCII (it is sent as a header), found %q", r)
		}
	}
	if l := b.GetLocale(); l != "" && !localeRE.MatchString(l) {
		return invalid("browser.locale %.40q is not a language tag such as en-US or de-DE", l)
	}
	return nil
}

func checkProxy(p *latchkeyv1.Proxy) error {
	if p == nil {
		return nil
	}
	u, err := url.Parse(p.GetServer())
	if err != nil || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") {
		return invalid("proxy server must be scheme://host:port, such as http://127.0.0.1:3128 (put the user name and password in their own fields)")
	}
	switch u.Scheme {
	case "http", "https", "socks5":
	default:
		return invalid("proxy server scheme must be http, https or socks5")
	}
	if p.GetPassword() != "" && p.GetUsername() == "" {
		return invalid("proxy password given without a username")
	}
	if len(p.GetUsername()) > 256 || len(p.GetPassword()) > MaxCredentialBytes {
		return invalid("proxy username or password is too long")
	}
	return nil
}

func checkRefresh(r *latchkeyv1.RefreshSettings) error {
	ka := r.GetKeepAliveInterval()
	if ka == nil {
		return nil
	}
	if err := ka.CheckValid(); err != nil {
		return invalid("refresh.keep_alive_interval is not a valid duration")
	}
	if d := ka.AsDuration(); d != 0 && (d < MinKeepAlive || d > MaxKeepAlive) {
		return invalid("refresh.keep_alive_interval must be 0 (off) or between %s and %s", MinKeepAlive, MaxKeepAlive)
	}
	return nil
}

func checkRecorder(r *latchkeyv1.RecorderSettings, required bool) error {
	if r == nil {
		if required {
			return invalid("recorder settings are required for a RECORDER session: recorder.start_url is the page the person logs in on")
		}
		return nil
	}
	u, err := url.Parse(r.GetStartUrl())
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return invalid("recorder.start_url must be an http or https URL")
	}
	if len(r.GetFinishUrlPrefix()) > 2048 {
		return invalid("recorder.finish_url_prefix is too long")
	}
	return nil
}

// checkCreate validates a CreateAuthSessionRequest, by type.
func checkCreate(req *latchkeyv1.CreateAuthSessionRequest) error {
	if id := req.GetAuthSessionId(); id != "" {
		if err := store.CheckID("auth session id", id); err != nil {
			return err
		}
	}
	typ := req.GetType()
	switch typ {
	case latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, latchkeyv1.SessionType_SESSION_TYPE_RUNTIME:
		if err := checkCredentials(req.GetCredentials()); err != nil {
			return err
		}
		if req.GetRecorder() != nil {
			return invalid("recorder settings are only for RECORDER sessions")
		}
	case latchkeyv1.SessionType_SESSION_TYPE_RECORDER:
		if len(req.GetCredentials()) > 0 {
			return invalid("a RECORDER session takes no credentials: a person logs in")
		}
	default:
		return invalid("type must be CREDENTIALS, RUNTIME or RECORDER, got %s", typ)
	}
	for _, err := range []error{
		store.CheckDisplayName(req.GetDisplayName()), checkLabels(req.GetLabels()), checkVars(req.GetVars()),
		checkProxy(req.GetProxy()), checkRefresh(req.GetRefresh()), checkBrowser(req.GetBrowser()), store.CheckSite(req.GetSite()),
		checkRecorder(req.GetRecorder(), typ == latchkeyv1.SessionType_SESSION_TYPE_RECORDER),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

func checkStates(states []latchkeyv1.SessionState) error {
	for _, s := range states {
		if _, ok := latchkeyv1.SessionState_name[int32(s)]; !ok || s == latchkeyv1.SessionState_SESSION_STATE_UNSPECIFIED {
			return invalid("states: %s is not a session state (PENDING, READY, RECREATING, EXPIRED)", fmt.Sprint(s))
		}
	}
	return nil
}
