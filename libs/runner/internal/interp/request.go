package interp

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/chrome"
)

// requestJS makes an HTTP call from a document of the URL's origin, so the browser
// sends the context's cookies (HttpOnly ones too), through the session's proxy, and
// keeps the cookies the answer sets (rotated tokens).
const requestJS = `(async (url, method, headers, body, timeoutMs) => {
const ctl = new AbortController(); const timer = setTimeout(() => ctl.abort(), timeoutMs);
try {
  const init = {method, headers, credentials: 'include', signal: ctl.signal};
  if (body !== null && method !== 'GET' && method !== 'HEAD') init.body = body;
  const r = await fetch(url, init);
  const text = await r.text();
  return {status: r.status, body: text, contentType: r.headers.get('content-type') || ''};
} catch (e) {
  return {error: e && e.name === 'AbortError' ? 'timeout' : 'network'};
} finally { clearTimeout(timer); }
})`

type requestResult struct {
	Status      int    `json:"status"`
	Body        string `json:"body"`
	ContentType string `json:"contentType"`
	Error       string `json:"error"`
}

// request runs a request step: a status in invalidStatus (default 401, 403) means not
// logged in, 5xx and 429 and network errors are passing trouble, and a status outside
// expectStatus (default 2xx) fails the step. With as, the body goes into the output
// (decoded when it is JSON).
func (in *interp) request(ctx context.Context, s *recipe.Step) error {
	origin := chrome.OriginOf(s.URL)
	if origin == "" {
		return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "field url: not an http or https URL"}
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
	timeout := time.Until(deadlineOf(ctx, 30*time.Second))
	expr := fmt.Sprintf("%s(%s, %s, %s, %s, %d)", requestJS, jsString(s.URL), jsString(method), headers, body, max(timeout.Milliseconds(), 1))
	res, err := chromedp.Run(ctx, chromedp.Evaluate[requestResult](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		return err
	}
	switch res.Error {
	case "timeout":
		return context.DeadlineExceeded
	case "network":
		return &stepError{reason: reasonTransient, outcome: outcomeInconclusive, msg: "the request failed: the site could not be reached"}
	}
	invalid := s.InvalidStatus
	if invalid == nil {
		invalid = []int{401, 403}
	}
	if err := statusError(res.Status, true, invalid); err != nil {
		if in.rc.Mode != ModeCheck {
			if se, ok := err.(*stepError); ok && se.outcome == outcomeInvalid {
				se.msg = fmt.Sprintf("the site answered %d: the state is not logged in", res.Status)
			}
		}
		return err
	}
	ok := res.Status >= 200 && res.Status < 300
	if len(s.ExpectStatus) > 0 {
		ok = containsInt(s.ExpectStatus, res.Status)
	}
	if !ok {
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

// deadlineOf is ctx's deadline, or def from now.
func deadlineOf(ctx context.Context, def time.Duration) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(def)
}
