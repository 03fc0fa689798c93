package interp

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/chrome"
)

// requestJS makes an HTTP call from a document of the URL's origin, so the browser
// sends the context's cookies (HttpOnly ones too), through the session's proxy, and
// keeps the cookies the answer sets (rotated tokens). With redirect "manual" a
// redirect comes back as an opaque answer (type opaqueredirect, status 0, no body):
// the page may know that the site redirected, not where to.
const requestJS = `(async (url, method, headers, body, timeoutMs, redirect) => {
const ctl = new AbortController(); const timer = setTimeout(() => ctl.abort(), timeoutMs);
try {
  const init = {method, headers, credentials: 'include', signal: ctl.signal, redirect};
  if (body !== null && method !== 'GET' && method !== 'HEAD') init.body = body;
  const r = await fetch(url, init);
  const opaque = r.type === 'opaqueredirect';
  const text = opaque ? '' : await r.text();
  return {status: r.status, body: text, contentType: r.headers.get('content-type') || '',
    redirected: r.redirected || opaque, opaqueRedirect: opaque, url: r.url};
} catch (e) {
  return {error: e && e.name === 'AbortError' ? 'timeout' : 'network'};
} finally { clearTimeout(timer); }
})`

type requestResult struct {
	Status      int    `json:"status"`
	Body        string `json:"body"`
	ContentType string `json:"contentType"`
	// Redirected: the site answered with at least one redirect (followed or not).
	Redirected bool `json:"redirected"`
	// OpaqueRedirect: with redirect "manual", the answer is the redirect itself.
	OpaqueRedirect bool `json:"opaqueRedirect"`
	// URL is the final URL after the redirects followed.
	URL   string `json:"url"`
	Error string `json:"error"`
}

// request runs a request step: network errors, 5xx and 429 are passing trouble; a
// status in invalidStatus (default 401, 403) or a matching invalidIf rule means not
// logged in; a status outside expectStatus (default 2xx) fails the step. With as, the
// body goes into the output (decoded when it is JSON). The body never goes into an
// error, a log or a span: a failure names the rule that matched.
func (in *interp) request(ctx context.Context, s *recipe.Step) error {
	origin := chrome.OriginOf(s.URL)
	if origin == "" {
		return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "field url: not an http or https URL"}
	}
	if r := s.InvalidIf; r != nil && r.RedirectTo != "" {
		if msg := recipe.CheckRedirectTo(r.RedirectTo); msg != "" {
			return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "field invalidIf.redirectTo: " + msg}
		}
	}
	if err := in.h.Context().OnOrigin(ctx, origin); err != nil {
		return &stepError{reason: reasonTransient, outcome: outcomeInconclusive, msg: "could not open a document of " + origin}
	}
	in.h.Context().Visit(origin)
	method := strings.ToUpper(cmp.Or(s.Method, "GET"))
	headers, _ := json.Marshal(s.Headers)
	if s.Headers == nil {
		headers = []byte("{}")
	}
	body := "null"
	if s.Body != "" {
		body = jsString(s.Body)
	}
	redirect := cmp.Or(s.Redirect, recipe.RedirectFollow)
	timeout := time.Until(deadlineOf(ctx, 30*time.Second))
	expr := fmt.Sprintf("%s(%s, %s, %s, %s, %d, %s)", requestJS, jsString(s.URL), jsString(method), headers, body, max(timeout.Milliseconds(), 1), jsString(redirect))
	res, err := chromedp.Run(ctx, chromedp.Evaluate[requestResult](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		return err
	}
	switch res.Error {
	case "timeout":
		return context.DeadlineExceeded
	case "network":
		if redirect == recipe.RedirectFollow {
			in.note = "no answer: the site could not be reached, or it redirected to another origin (with redirect: manual a redirect is seen as such)"
		}
		return &stepError{reason: reasonTransient, outcome: outcomeInconclusive, msg: "the request failed: the site could not be reached"}
	}
	in.note = describeAnswer(res)
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(attribute.Int("latchkey.request.status", res.Status), attribute.Bool("latchkey.request.redirected", res.Redirected))
	invalid := s.InvalidStatus
	if invalid == nil {
		invalid = []int{401, 403}
	}
	if err := statusError(res.Status, true, invalid); err != nil {
		return in.notLoggedIn(err, fmt.Sprintf("the site answered %d", res.Status))
	}
	if rule, err := matchInvalidIf(s.InvalidIf, res); err != nil {
		return err
	} else if rule != "" {
		span.SetAttributes(attribute.String("latchkey.request.rule", rule))
		in.note += "; " + rule + " matched"
		return in.notLoggedIn(&stepError{reason: reasonScript, outcome: outcomeInvalid, status: res.Status,
			msg: rule + " matched: not logged in"}, rule+" matched")
	}
	if s.InvalidIf != nil {
		in.note += "; no invalidIf rule matched"
	}
	ok := res.Status >= 200 && res.Status < 300
	if len(s.ExpectStatus) > 0 {
		ok = containsInt(s.ExpectStatus, res.Status)
	}
	if !ok {
		if res.OpaqueRedirect {
			return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "the site answered with a redirect (not followed: redirect is manual), not an expected status"}
		}
		return &stepError{reason: reasonScript, outcome: outcomeInconclusive, status: res.Status, msg: fmt.Sprintf("the site answered %d, not an expected status", res.Status)}
	}
	if s.As != "" {
		var v any
		if strings.Contains(res.ContentType, "json") && json.Unmarshal([]byte(res.Body), &v) == nil {
			in.output[s.As] = v
		} else {
			in.output[s.As] = res.Body
		}
	}
	return nil
}

// notLoggedIn words a not-logged-in answer for a step outside a check, where it
// fails the step.
func (in *interp) notLoggedIn(err error, what string) error {
	if in.rc.Mode != ModeCheck {
		if se, ok := err.(*stepError); ok && se.outcome == outcomeInvalid {
			se.msg = what + ": the state is not logged in"
		}
	}
	return err
}

// describeAnswer says what the site answered, for latchkey try: the status and
// whether it redirected, never the body or the URL (either may hold a token).
func describeAnswer(res requestResult) string {
	switch {
	case res.OpaqueRedirect:
		return "answered with a redirect (not followed)"
	case res.Redirected:
		return fmt.Sprintf("answered %d after a redirect", res.Status)
	}
	return fmt.Sprintf("answered %d", res.Status)
}

// matchInvalidIf returns the name of the first rule of r that matches the answer,
// or "". A json rule on a body that is not JSON cannot tell: an INCONCLUSIVE error,
// unless a rule before it matched.
func matchInvalidIf(r *recipe.InvalidIf, res requestResult) (string, error) {
	if r == nil {
		return "", nil
	}
	switch {
	case r.Redirected && res.Redirected:
		return "invalidIf.redirected", nil
	case r.RedirectTo != "" && res.Redirected && redirectedTo(r.RedirectTo, res.URL):
		return "invalidIf.redirectTo", nil
	case r.BodyContains != "" && strings.Contains(res.Body, r.BodyContains):
		return "invalidIf.bodyContains", nil
	case r.BodyNotContains != "" && !strings.Contains(res.Body, r.BodyNotContains):
		return "invalidIf.bodyNotContains", nil
	}
	if len(r.JSON) == 0 {
		return "", nil
	}
	var doc any
	if err := json.Unmarshal([]byte(res.Body), &doc); err != nil {
		return "", &stepError{reason: reasonScript, outcome: outcomeInconclusive, status: res.Status,
			msg: "the answer is not JSON, so the invalidIf.json rules cannot tell"}
	}
	for i, j := range r.JSON {
		if j.Matches(doc) {
			name := "invalidIf.json"
			if len(r.JSON) > 1 {
				name = fmt.Sprintf("invalidIf.json[%d]", i)
			}
			return fmt.Sprintf("%s (%s %s)", name, j.Path, j.Op), nil
		}
	}
	return "", nil
}

// redirectedTo reports whether final (the URL after the redirects) is at rule: a path
// (on any origin) or an absolute URL, matching that path and the paths below it.
func redirectedTo(rule, final string) bool {
	fu, err := url.Parse(final)
	if err != nil {
		return false
	}
	path := rule
	if !strings.HasPrefix(rule, "/") {
		ru, err := url.Parse(rule)
		if err != nil || !strings.EqualFold(ru.Scheme, fu.Scheme) || !strings.EqualFold(ru.Host, fu.Host) {
			return false
		}
		path = cmp.Or(ru.Path, "/")
	}
	p := cmp.Or(fu.Path, "/")
	switch {
	case p == path || path == "/":
		return true
	case strings.HasSuffix(path, "/"):
		return strings.HasPrefix(p, path)
	}
	return strings.HasPrefix(p, path+"/")
}

// deadlineOf is ctx's deadline, or def from now.
func deadlineOf(ctx context.Context, def time.Duration) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(def)
}
