package recorder

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// cookieName holds the claim secret of the browser that opened a recorder URL first.
const cookieName = "lk_recorder"

// claimKey is the LK_RECORDINGS key of a token's claim.
func claimKey(id string) string { return "claim." + id }

type claimEntry struct {
	digest  []byte
	expires time.Time
}

func digest(secret string) []byte {
	d := sha256.Sum256([]byte(secret))
	return d[:]
}

// token checks the request's token (signature, expiry) and answers the error itself.
func (r *Recorder) token(w http.ResponseWriter, req *http.Request) (claims, string, bool) {
	tok := req.PathValue("token")
	c, err := parse(r.urlKey, tok, r.now())
	switch {
	case errors.Is(err, errExpired):
		plain(w, http.StatusGone, "This recorder link has expired. Ask for a new one: latchkey sessions record "+c.Session)
		return c, "", false
	case err != nil:
		plain(w, http.StatusForbidden, "This recorder link is not valid. Ask for a new one: latchkey sessions record SESSION")
		return c, "", false
	}
	return c, tokenID(c), true
}

func (r *Recorder) bucket(w http.ResponseWriter) (jetstream.KeyValue, bool) {
	kv := r.kv.Load()
	if kv == nil {
		plain(w, http.StatusServiceUnavailable, "The session registry is starting; reload in a moment.")
		return nil, false
	}
	return *kv, true
}

// claim makes the first browser whose page claims a token its only holder: the digest
// of a random cookie goes under claim.<token id> with a create (so exactly one claim
// wins); the holder may claim again (a reload), any other browser is refused. The page
// claims with a POST from its script, so a link preview or a mail scanner that only
// GETs the URL does not use the link up.
func (r *Recorder) claim(w http.ResponseWriter, req *http.Request, id string, c claims) bool {
	kv, ok := r.bucket(w)
	if !ok {
		return false
	}
	if r.holds(req.Context(), req, id) {
		return true
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		plain(w, http.StatusInternalServerError, "Internal error.")
		return false
	}
	secret := base64.RawURLEncoding.EncodeToString(b[:])
	_, err := kv.Create(req.Context(), claimKey(id), digest(secret))
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		plain(w, http.StatusGone, "This recorder link was already opened in another browser, and each link works once. Ask for a new one: latchkey sessions record "+c.Session)
		return false
	case err != nil:
		r.d.Log.ErrorContext(req.Context(), "claiming a recorder url failed", "token_id", id, "error", err)
		plain(w, http.StatusServiceUnavailable, "The recorder is not available right now; reload in a moment.")
		return false
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: secret, Path: "/record/" + req.PathValue("token"), Expires: c.expires(),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: req.TLS != nil || strings.HasPrefix(r.base(), "https:"),
	})
	r.remember(id, digest(secret), c.expires())
	return true
}

// holds reports whether the request comes from the browser that claimed the token.
func (r *Recorder) holds(ctx context.Context, req *http.Request, id string) bool {
	ck, err := req.Cookie(cookieName)
	if err != nil {
		return false
	}
	d := digest(ck.Value)
	if v, ok := r.claimed.Load(id); ok {
		return subtle.ConstantTimeCompare(v.(claimEntry).digest, d) == 1
	}
	kv := r.kv.Load()
	if kv == nil {
		return false
	}
	e, err := (*kv).Get(ctx, claimKey(id))
	if err != nil || subtle.ConstantTimeCompare(e.Value(), d) != 1 {
		return false
	}
	r.remember(id, d, r.now().Add(r.cfg.TTL))
	return true
}

// remember caches a claim in memory and forgets expired ones.
func (r *Recorder) remember(id string, d []byte, expires time.Time) {
	now := r.now()
	r.claimed.Range(func(k, v any) bool {
		if now.After(v.(claimEntry).expires) {
			r.claimed.Delete(k)
		}
		return true
	})
	r.claimed.Store(id, claimEntry{digest: d, expires: expires})
}

// plain answers a short text message.
func plain(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n"))
}

// claimPage answers the page's claim: 204 with the holder's cookie, or why not.
func (r *Recorder) claimPage(w http.ResponseWriter, req *http.Request) {
	c, id, ok := r.token(w, req)
	if !ok || !r.claim(w, req, id, c) {
		return
	}
	r.d.Log.InfoContext(req.Context(), "recorder link claimed", "project_id", c.Project, "auth_session_id", c.Session, "run_id", c.Run, "token_id", id)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}
