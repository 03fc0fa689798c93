package interp

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"go.opentelemetry.io/otel/trace"

	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// pollInterval is how often a waiting step looks at the page again.
const pollInterval = 25 * time.Millisecond

// visibleJS defines lkVisible(el): attached, displayed and with a box.
const visibleJS = `const lkVisible = el => { if (!el || !el.isConnected) return false; const s = getComputedStyle(el);
if (s.visibility === 'hidden' || s.display === 'none') return false; return !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length); };`

// keys maps press key names to chromedp key codes; any single character is itself.
var keys = map[string]string{
	"Enter": kb.Enter, "Tab": kb.Tab, "Escape": kb.Escape, "Backspace": kb.Backspace, "Delete": kb.Delete,
	"ArrowDown": kb.ArrowDown, "ArrowUp": kb.ArrowUp, "ArrowLeft": kb.ArrowLeft, "ArrowRight": kb.ArrowRight,
	"Home": kb.Home, "End": kb.End, "PageDown": kb.PageDown, "PageUp": kb.PageUp, "Space": " ",
}

// exec runs one rendered step.
func (in *interp) exec(ctx context.Context, s *recipe.Step) error {
	switch s.Kind {
	case recipe.Goto:
		return in.gotoURL(ctx, s.URL)
	case recipe.Click:
		if err := waitFor(ctx, s.Selector, true); err != nil {
			return err
		}
		return in.actAndWait(ctx, s.NoWaitAfter, func(ctx context.Context) error {
			return chromedp.Do(ctx, chromedp.Click(chromedp.CSS(s.Selector)))
		})
	case recipe.Fill:
		if err := waitFor(ctx, s.Selector, true); err != nil {
			return err
		}
		return chromedp.Do(ctx, chromedp.Clear(chromedp.CSS(s.Selector)), typeInto(s.Selector, s.Value))
	case recipe.Press:
		return in.press(ctx, s)
	case recipe.Select:
		return selectOption(ctx, s)
	case recipe.WaitVisible, recipe.ExpectVisible:
		err := waitFor(ctx, s.Selector, true)
		if s.Kind == recipe.ExpectVisible && errors.Is(err, context.DeadlineExceeded) {
			return notAsExpected("no visible element matches")
		}
		return err
	case recipe.WaitHidden:
		return waitFor(ctx, s.Selector, false)
	case recipe.WaitURL, recipe.ExpectURL:
		err := waitURL(ctx, s)
		if s.Kind == recipe.ExpectURL && errors.Is(err, context.DeadlineExceeded) {
			return notAsExpected("the page's URL is not the expected one")
		}
		return err
	case recipe.ExpectText:
		return expectText(ctx, s)
	case recipe.Extract:
		return in.extract(ctx, s)
	case recipe.Evaluate:
		return in.evaluate(ctx, s)
	case recipe.Request:
		return in.request(ctx, s)
	case recipe.TOTP:
		return in.totp(ctx, s)
	case recipe.Retry:
		return in.retry(s)
	case recipe.Ask:
		return in.askStep(ctx, s)
	case recipe.Screenshot:
		return in.screenshotStep(ctx, s)
	case recipe.Sleep:
		t := time.NewTimer(s.Duration)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	case recipe.Fail:
		msg := s.Message
		if msg == "" {
			msg = "the recipe failed as " + s.Reason
		}
		outcome := outcomeInvalid
		if s.Reason == "TRANSIENT" || s.Reason == "TIMEOUT" {
			outcome = outcomeInconclusive
		}
		return &sdk.Failure{Reason: sdk.ReasonByName(s.Reason), Message: msg, Outcome: outcome}
	}
	return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "unknown step kind " + string(s.Kind)}
}

// gotoURL navigates and types the page's answer: network errors, 5xx and 429 are
// passing trouble (429 in a create is RATE_LIMITED), 401 and 403 in a check mean the
// state is not logged in.
func (in *interp) gotoURL(ctx context.Context, url string) error {
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	var le *chromedp.LoadError
	if errors.As(err, &le) {
		return &stepError{reason: reasonTransient, outcome: outcomeInconclusive, msg: "the site could not be reached: " + le.ErrorText}
	}
	if err != nil {
		return err
	}
	if resp == nil {
		return nil
	}
	return statusError(int(resp.Status), in.rc.Mode == ModeCheck, []int{401, 403})
}

// statusError types an HTTP status a step met, or returns nil when it is fine.
func statusError(status int, check bool, invalid []int) error {
	switch {
	case status == 429:
		return &stepError{reason: reasonTransient, outcome: outcomeInconclusive, status: status, msg: "the site answered 429 Too Many Requests"}
	case status >= 500:
		return &stepError{reason: reasonTransient, outcome: outcomeInconclusive, status: status, msg: fmt.Sprintf("the site answered %d", status)}
	case check && containsInt(invalid, status):
		return &stepError{reason: reasonScript, outcome: outcomeInvalid, status: status, msg: fmt.Sprintf("the site answered %d: not logged in", status)}
	}
	return nil
}

func containsInt(xs []int, v int) bool {
	for _, x := range xs {
		if x == v {
			return true
		}
	}
	return false
}

// jsString quotes s for JavaScript.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// waitFor polls until an element matching sel is visible (or, with visible false,
// until none is). An invalid selector fails at once.
func waitFor(ctx context.Context, sel string, visible bool) error {
	expr := `(() => { ` + visibleJS + ` return [...document.querySelectorAll(` + jsString(sel) + `)].some(lkVisible); })()`
	if !visible {
		expr = `!` + expr
	}
	return poll(ctx, expr)
}

// poll evaluates expr until it is true. Errors while the page navigates are retried;
// a syntax error (an invalid selector) is not.
func poll(ctx context.Context, expr string) error {
	wait := 2 * time.Millisecond
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return nil
		}
		var ex *chromedp.ExceptionError
		if errors.As(err, &ex) && strings.Contains(ex.Error(), "SyntaxError") {
			return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "the selector is not valid CSS"}
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
		wait = min(2*wait, pollInterval)
	}
}

// holds reports whether a step's when condition holds now, without waiting.
func (in *interp) holds(ctx context.Context, c *recipe.Condition) (bool, error) {
	expr := `(() => { ` + visibleJS + ` const want = ` + jsString(c.Contains) + `;
return [...document.querySelectorAll(` + jsString(c.Selector) + `)].some(el => lkVisible(el) && (!want || (el.innerText || '').includes(want))); })()`
	// Retry briefly while a navigation replaces the document.
	for tries := 0; ; tries++ {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		var ex *chromedp.ExceptionError
		switch {
		case errors.As(err, &ex):
			return false, &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "field when.selector: the selector is not valid CSS"}
		case err == nil || tries == 20 || ctx.Err() != nil:
			return ok, err
		}
		if err := sleepCtx(ctx, pollInterval); err != nil {
			return false, err
		}
	}
}

// press presses a key (in the element selector matches, if set) and, like a click,
// waits for a navigation it starts (Enter in a form's field submits it).
func (in *interp) press(ctx context.Context, s *recipe.Step) error {
	key, ok := keys[s.Key]
	if !ok {
		if len([]rune(s.Key)) != 1 {
			return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "field key: unknown key; use a single character or one of Enter, Tab, Escape, Backspace, Delete, ArrowDown, ArrowUp, ArrowLeft, ArrowRight, Home, End, PageDown, PageUp, Space"}
		}
		key = s.Key
	}
	if s.Selector != "" {
		if err := waitFor(ctx, s.Selector, true); err != nil {
			return err
		}
		return in.actAndWait(ctx, s.NoWaitAfter, func(ctx context.Context) error {
			return chromedp.Do(ctx, typeInto(s.Selector, key))
		})
	}
	return in.actAndWait(ctx, s.NoWaitAfter, func(ctx context.Context) error {
		return chromedp.Do(ctx, chromedp.KeyEvent(key))
	})
}

// selectOption chooses an option of a <select> by value (or by its text) and fires
// the events a page listens for.
func selectOption(ctx context.Context, s *recipe.Step) error {
	if err := waitFor(ctx, s.Selector, true); err != nil {
		return err
	}
	ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`((sel, v) => { const el = document.querySelector(sel);
if (!el || el.tagName !== 'SELECT') return false;
const opt = [...el.options].find(o => o.value === v) || [...el.options].find(o => o.text.trim() === v);
if (!opt) return false; el.value = opt.value;
el.dispatchEvent(new Event('input', {bubbles: true})); el.dispatchEvent(new Event('change', {bubbles: true})); return true;
})(`+jsString(s.Selector)+`, `+jsString(s.Value)+`)`))
	if err != nil {
		return err
	}
	if !ok {
		return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "the element is not a select with that option"}
	}
	return nil
}

// waitURL polls the page's URL until it contains the text or matches the regex.
func waitURL(ctx context.Context, s *recipe.Step) error {
	var re *regexp.Regexp
	if s.Regex != "" {
		var err error
		if re, err = regexp.Compile(s.Regex); err != nil {
			return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "field regex: not a valid regular expression"}
		}
	}
	for {
		loc, err := chromedp.Run(ctx, chromedp.Location())
		if err == nil && (re != nil && re.MatchString(loc) || re == nil && strings.Contains(loc, s.Contains)) {
			return nil
		}
		t := time.NewTimer(pollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// expectText polls until the first visible element matching the selector has the
// text (exactly, containing it, or matching the regex).
func expectText(ctx context.Context, s *recipe.Step) error {
	var re *regexp.Regexp
	if s.Regex != "" {
		var err error
		if re, err = regexp.Compile(s.Regex); err != nil {
			return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "field regex: not a valid regular expression"}
		}
	}
	expr := `(() => { ` + visibleJS + ` const el = [...document.querySelectorAll(` + jsString(s.Selector) + `)].find(lkVisible);
return el ? (el.innerText || el.textContent || '').trim() : null; })()`
	for {
		text, err := chromedp.Run(ctx, chromedp.Evaluate[*string](expr))
		var ex *chromedp.ExceptionError
		if errors.As(err, &ex) {
			return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "the selector is not valid CSS"}
		}
		if err == nil && text != nil {
			t := *text
			if s.Text != "" && t == s.Text || s.Contains != "" && strings.Contains(t, s.Contains) || re != nil && re.MatchString(t) {
				return nil
			}
		}
		tm := time.NewTimer(pollInterval)
		select {
		case <-ctx.Done():
			tm.Stop()
			if text == nil {
				return notAsExpected("no visible element matches")
			}
			return notAsExpected("the element's text is not the expected one")
		case <-tm.C:
		}
	}
}

// extract reads one value (text or attribute) or a list of records into the output.
func (in *interp) extract(ctx context.Context, s *recipe.Step) error {
	if s.List == "" {
		expr := `(() => { const el = document.querySelector(` + jsString(s.Selector) + `); if (!el) return null;
const attr = ` + jsString(s.Attribute) + `; return attr ? el.getAttribute(attr) : (el.innerText || el.textContent || '').trim(); })()`
		for {
			v, err := chromedp.Run(ctx, chromedp.Evaluate[*string](expr))
			var ex *chromedp.ExceptionError
			if errors.As(err, &ex) {
				return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "the selector is not valid CSS"}
			}
			if err == nil && v != nil {
				in.output[s.As] = *v
				return nil
			}
			if err := sleepCtx(ctx, pollInterval); err != nil {
				return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "no element matches"}
			}
		}
	}
	type field struct{ Name, Sel, Attr string }
	var fields []field
	for name, spec := range s.Fields {
		sel, attr := spec, ""
		if i := strings.LastIndex(spec, "@"); i >= 0 && regexp.MustCompile(`^[A-Za-z_:][-A-Za-z0-9_:.]*$`).MatchString(spec[i+1:]) {
			sel, attr = spec[:i], spec[i+1:]
		}
		fields = append(fields, field{name, strings.TrimSpace(sel), attr})
	}
	fj, _ := json.Marshal(fields)
	expr := `((rowSel, fields) => [...document.querySelectorAll(rowSel)].map(row => { const o = {};
for (const f of fields) { const el = f.Sel ? row.querySelector(f.Sel) : row;
o[f.Name] = el ? (f.Attr ? el.getAttribute(f.Attr) : (el.innerText || el.textContent || '').trim()) : null; } return o; }))(` +
		jsString(s.List) + `, ` + string(fj) + `)`
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]map[string]any](expr))
	var ex *chromedp.ExceptionError
	if errors.As(err, &ex) {
		return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "a selector of list or fields is not valid CSS"}
	}
	if err != nil {
		return err
	}
	if rows == nil {
		rows = []map[string]any{}
	}
	in.output[s.As] = rows
	return nil
}

// evaluate runs the step's script (awaiting a promise) and, with as, stores its JSON
// result in the output.
func (in *interp) evaluate(ctx context.Context, s *recipe.Step) error {
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](s.Script, chromedp.EvalAwaitPromise))
	var ex *chromedp.ExceptionError
	switch {
	case errors.Is(err, chromedp.ErrJSUndefined), errors.Is(err, chromedp.ErrJSNull):
		raw, err = []byte("null"), nil
	case errors.As(err, &ex):
		return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "the script threw an exception"}
	case err != nil:
		return err
	}
	if s.As == "" {
		return nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "the script's result is not JSON"}
	}
	in.output[s.As] = v
	return nil
}

// totpPeriod is the TOTP time step, in seconds (RFC 6238's default, which totp
// steps use with SHA-1 and 6 digits).
const totpPeriod = 30

// totp stores a code of the secret in .Vars[as] (default "totp"): the code of the
// current time step, or, when a login of this session already used that step, of the
// next one, waiting for it to begin. Sites that follow RFC 6238 section 5.2 accept a
// code once; the reservation (Host.ReserveTOTP) is shared by every runner.
func (in *interp) totp(ctx context.Context, s *recipe.Step) error {
	secret := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s.Secret), " ", ""))
	if secret == "" {
		return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "field secret: empty; is totp_secret among the credentials?"}
	}
	opts := totp.ValidateOpts{Period: totpPeriod, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}
	now := time.Now()
	if _, err := totp.GenerateCodeCustom(secret, now, opts); err != nil {
		return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "field secret: not a base32 TOTP secret"}
	}
	want := uint64(now.Unix()) / totpPeriod
	step, err := in.h.ReserveTOTP(ctx, secret, want)
	if err != nil {
		return err
	}
	at := time.Unix(int64(step*totpPeriod), 0)
	if wait := time.Until(at); step > want && wait > 0 {
		if time.Now().Add(wait).After(deadlineOf(ctx, wait+time.Second)) {
			return &stepError{reason: reasonTimeout, outcome: outcomeInconclusive,
				msg: fmt.Sprintf("the next TOTP time step no login used starts in %s, after the step's timeout", wait.Round(time.Second))}
		}
		trace.SpanFromContext(ctx).AddEvent("waiting for a TOTP time step no login used")
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
		in.note = fmt.Sprintf("time step %d (the current one was used: waited %s)", step, roundDuration(time.Since(now)))
	} else {
		in.note = fmt.Sprintf("time step %d", step)
	}
	code, err := totp.GenerateCodeCustom(secret, at, opts)
	if err != nil {
		return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "field secret: not a base32 TOTP secret"}
	}
	in.vars[cmp.Or(s.As, "totp")] = code
	return nil
}

// retry sends the run back to the step it names, once: a second time its condition
// holds, it lets the run go on (to the step that fails it, typically).
func (in *interp) retry(s *recipe.Step) error {
	if in.retried[s.Index] {
		in.note = "already went back once; going on"
		return nil
	}
	target := in.rc.API.RetryTarget(s)
	if target < 0 {
		return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: fmt.Sprintf("field from: no step is named %q", s.From)}
	}
	in.retried[s.Index] = true
	in.jump = target
	in.note = fmt.Sprintf("going back to step %d (%q)", in.jump, s.From)
	return nil
}

// askStep asks the caller and stores the answer in .Vars[field].
func (in *interp) askStep(ctx context.Context, s *recipe.Step) error {
	ans, err := in.h.Ask(ctx, sdk.Question{Field: s.Field, Prompt: s.Prompt, Choices: s.Choices, Wait: s.Duration})
	if err != nil {
		return err
	}
	in.vars[s.Field] = ans
	return nil
}

// screenshotStep stores a screenshot in LK_ARTIFACTS and its id in the output.
func (in *interp) screenshotStep(ctx context.Context, s *recipe.Step) error {
	var png []byte
	var err error
	if s.FullPage {
		png, err = chromedp.Run(ctx, chromedp.FullScreenshot(90))
	} else {
		png, err = chromedp.Run(ctx, chromedp.CaptureScreenshot())
	}
	if err != nil {
		return err
	}
	id, err := in.h.StoreArtifact(ctx, fmt.Sprintf("step-%d.png", s.Index), png, fmt.Sprintf("screenshot of step %d of %s", s.Index, in.rc.API.Name))
	if err != nil {
		return err
	}
	if s.As != "" {
		in.output[s.As] = id
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// typeInto types keys into the first element selector matches, as chromedp.SendKeys
// does for anything but file inputs. chromedp.SendKeys (v0.23) reads the node's
// attributes before it takes the node's lock: a data race with the DOM events that
// update them, seen under -race when Clear's value change arrived during the read.
func typeInto(selector, keys string) chromedp.Action[chromedp.Void] {
	return chromedp.QueryAfter(chromedp.CSS(selector), func(ctx context.Context, t *chromedp.Target, nodes []*chromedp.Node) (chromedp.Void, error) {
		if len(nodes) == 0 {
			return chromedp.Void{}, fmt.Errorf("selector %q matched nothing", selector)
		}
		return chromedp.KeyEventNode(nodes[0], keys)(ctx, t)
	}, chromedp.NodeVisible)
}
