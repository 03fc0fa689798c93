// Package interp is the recipe interpreter: it runs the steps of one API of a bundle
// (libs/recipe) in a task's tab, each in a span named after its kind, renders their
// templates, and types every failure for the program's mode (a check's INVALID or
// INCONCLUSIVE, a create's RATE_LIMITED), naming the failed step, never a value. The
// task it runs in is a Host: its browser context, its caller's answers and its
// artifacts.
package interp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/chrome"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// Mode is what a program runs as: it decides how failures are typed.
type Mode int

// The modes of a program.
const (
	ModeAPI Mode = iota
	ModeCheck
	ModeCreate
)

// Short names of the enum values the interpreter uses.
const (
	reasonScript      = latchkeyv1.FailureReason_FAILURE_REASON_SCRIPT_ERROR
	reasonTransient   = latchkeyv1.FailureReason_FAILURE_REASON_TRANSIENT
	reasonTimeout     = latchkeyv1.FailureReason_FAILURE_REASON_TIMEOUT
	reasonRateLimited = latchkeyv1.FailureReason_FAILURE_REASON_RATE_LIMITED

	outcomeInvalid      = latchkeyv1.CheckOutcome_CHECK_OUTCOME_INVALID
	outcomeInconclusive = latchkeyv1.CheckOutcome_CHECK_OUTCOME_INCONCLUSIVE
)

// Host is what a recipe needs of the task it runs in.
type Host interface {
	// Context is the task's browser context.
	Context() *chrome.Context
	// Ask asks the task's caller a question (ask steps).
	Ask(ctx context.Context, q sdk.Question) (string, error)
	// StoreArtifact stores a PNG as the task's artifact name and returns its id.
	StoreArtifact(ctx context.Context, name string, png []byte, description string) (string, error)
	// FailureScreenshot stores a screenshot of the page for failed step s and returns
	// its id; "" when it took none.
	FailureScreenshot(ctx context.Context, s *recipe.Step) (string, error)
	// BrowserError types an error of a browser call: infrastructure trouble when the
	// browser died, the task's cancellation or deadline when those ended it.
	BrowserError(ctx context.Context, err error) error
	// BrowserGone reports whether the task's browser exited.
	BrowserGone() bool
	// ReserveTOTP reserves, for the task's session and this TOTP secret, the first
	// time step at or after step that no login of the session used before, and
	// returns it. The reservation is shared by every runner of the session, so no
	// two logins send a code of the same step.
	ReserveTOTP(ctx context.Context, secret string, step uint64) (uint64, error)
}

// Recipe is one API of a bundle to run, and what its templates see.
type Recipe struct {
	API  *recipe.API
	Mode Mode
	// Params, Credentials (create only), Vars and Session are what templates see.
	// Vars is the run's own copy: totp and ask steps add to it.
	Params      map[string]any
	Credentials sdk.Credentials
	Vars        map[string]string
	Session     recipe.SessionData
}

// Options are the runner's settings for every recipe.
type Options struct {
	// StepTimeout bounds a step that sets no timeout.
	StepTimeout time.Duration
	Tracer      trace.Tracer
	Log         *slog.Logger
	// Observer, if set, sees every step as it ends.
	Observer func(sdk.StepEvent)
}

// Run runs rc's steps in order in the task's tab (ctx) and returns the output they
// set; the first failure ends it, as a *sdk.Failure naming the step (or the task's
// end or infrastructure trouble, as h.BrowserError types them).
func Run(ctx context.Context, h Host, rc Recipe, opt Options) (map[string]any, error) {
	in := &interp{h: h, rc: rc, opt: opt, vars: rc.Vars, output: map[string]any{}, jump: -1, retried: map[int]bool{}}
	steps := rc.API.Steps
	for i := 0; i < len(steps); i++ {
		if err := in.step(ctx, steps[i]); err != nil {
			return nil, err
		}
		if in.jump >= 0 { // a retry step went back
			i, in.jump = in.jump-1, -1
		}
	}
	return in.output, nil
}

// interp runs one recipe API in a task's tab.
type interp struct {
	h      Host
	rc     Recipe
	opt    Options
	vars   map[string]string
	output map[string]any
	// note says what the running step found (latchkey try shows it, spans carry it):
	// statuses, rule names, durations — never a value.
	note string
	// jump is the index of the step a retry step sends the run back to, or -1;
	// retried holds the retry steps that did.
	jump    int
	retried map[int]bool
}

// step runs one step in its own span, named after its kind.
func (in *interp) step(ctx context.Context, s *recipe.Step) (err error) {
	ctx, span := in.opt.Tracer.Start(ctx, string(s.Kind))
	span.SetAttributes(attribute.Int("latchkey.step.index", s.Index), attribute.String("latchkey.step.kind", string(s.Kind)),
		attribute.String("latchkey.api", in.rc.API.Name), attribute.String("latchkey.file", in.rc.API.File))
	if sel := s.Selector + s.List; sel != "" {
		span.SetAttributes(attribute.String("latchkey.step.selector", sel))
	}
	start := time.Now()
	status := "ok"
	in.note = ""
	var ignored error
	defer func() {
		if err != nil {
			span.SetStatus(codes.Error, "step failed")
		}
		span.SetAttributes(attribute.String("latchkey.step.status", status))
		if in.note != "" {
			span.SetAttributes(attribute.String("latchkey.step.note", in.note))
		}
		span.End()
		if in.opt.Observer != nil {
			in.opt.Observer(sdk.StepEvent{API: in.rc.API.Name, Index: s.Index, Kind: s.Kind, Name: s.Name, Selector: s.Selector + s.List, Status: status, Duration: time.Since(start), Err: errors.Join(err, ignored), Note: in.note})
		}
	}()
	if s.When != nil {
		// The condition first: a skipped step may refer to vars it would have set.
		w, err := in.renderWhen(s)
		if err == nil {
			var ok bool
			if ok, err = in.holds(ctx, w); err == nil && !ok {
				status = "skipped"
				return nil
			}
		}
		if err != nil {
			status = "failed"
			return in.fail(ctx, s, err)
		}
	}
	rs, err := in.render(s)
	if err != nil {
		status = "failed"
		return in.fail(ctx, s, err)
	}
	timeout := in.opt.StepTimeout
	if s.Kind == recipe.TOTP {
		// Waiting for a time step no login used yet takes up to a period more.
		timeout += totpPeriod * time.Second
	}
	if s.Timeout > 0 {
		timeout = s.Timeout
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err = in.exec(sctx, rs); err == nil {
		return nil
	}
	if ctx.Err() != nil {
		// The task ended (canceled, past its deadline, browser gone), not the step.
		status = "failed"
		return in.h.BrowserError(ctx, err)
	}
	if sdk.IsInfra(err) {
		// Latchkey's own trouble (a store the step needs), not the site's or the recipe's.
		status = "failed"
		return err
	}
	if s.Optional {
		status = "ignored"
		span.AddEvent("optional step failed")
		in.opt.Log.DebugContext(ctx, "optional step failed", "api", in.rc.API.Name, "step", s.Index, "kind", string(s.Kind))
		ignored = err
		return nil
	}
	status = "failed"
	if in.h.BrowserGone() {
		return sdk.Infra("step %d (%s): %w", s.Index, s.Kind, err)
	}
	return in.fail(ctx, s, err)
}

// fail types a step's failure for the API's mode, names the step, and stores a
// screenshot of the page.
func (in *interp) fail(ctx context.Context, s *recipe.Step, err error) error {
	f := in.classify(s, err)
	f.Step = &sdk.StepRef{File: in.rc.API.File, API: in.rc.API.Name, Index: s.Index, Kind: string(s.Kind), Selector: s.Selector + s.List}
	where := s.Describe()
	f.Message = fmt.Sprintf("%s: api %s: %s: %s", in.rc.API.File, in.rc.API.Name, where, f.Message)
	if id, aerr := in.h.FailureScreenshot(ctx, s); aerr == nil && id != "" {
		f.ArtifactID = id
	}
	return f
}

// classify maps a step error to a failure reason and, for checks, an outcome.
func (in *interp) classify(s *recipe.Step, err error) *sdk.Failure {
	var f *sdk.Failure
	var se *stepError
	switch {
	case errors.As(err, &f):
		f = sdk.WithCause(&sdk.Failure{Reason: f.Reason, Message: f.Message, Outcome: f.Outcome}, err)
	case errors.As(err, &se):
		f = sdk.WithCause(&sdk.Failure{Reason: se.reason, Message: se.msg, Outcome: se.outcome}, err)
	case errors.Is(err, context.DeadlineExceeded):
		f = sdk.WithCause(&sdk.Failure{Reason: reasonTimeout, Message: "timed out", Outcome: outcomeInconclusive}, err)
	default:
		f = sdk.WithCause(&sdk.Failure{Reason: reasonScript, Message: "the browser refused the step: " + browserMessage(err), Outcome: outcomeInconclusive}, err)
	}
	if f.Outcome == 0 {
		f.Outcome = outcomeInconclusive
	}
	if s.FailAs != "" {
		f.Reason = sdk.ReasonByName(s.FailAs)
		if s.FailAs == "INVALID_CREDENTIALS" {
			f.Outcome = outcomeInvalid
		}
	}
	if in.rc.Mode == ModeCreate && f.Reason == reasonTransient && se != nil && se.status == 429 {
		f.Reason = reasonRateLimited
	}
	return f
}

// browserMessage shortens a browser error to its first line, which names what failed
// (never a value the recipe passed).
func browserMessage(err error) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i > 0 {
		msg = msg[:i]
	}
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return msg
}

// stepError is a step that ran and found something wrong.
type stepError struct {
	reason  latchkeyv1.FailureReason
	outcome latchkeyv1.CheckOutcome
	status  int // the HTTP status that caused it, if any
	msg     string
}

func (e *stepError) Error() string { return e.msg }

// notAsExpected is an expect step whose expectation does not hold: in a check, the
// state is not logged in.
func notAsExpected(format string, args ...any) error {
	return &stepError{reason: reasonScript, outcome: outcomeInvalid, msg: fmt.Sprintf(format, args...)}
}

// render executes the step's templates over params, credentials (create only), vars
// and session. A template error names the field, never a value.
func (in *interp) render(s *recipe.Step) (*recipe.Step, error) {
	d := in.data()
	rs := *s
	fields := map[string]*string{
		"url": &rs.URL, "selector": &rs.Selector, "value": &rs.Value, "key": &rs.Key, "text": &rs.Text,
		"contains": &rs.Contains, "regex": &rs.Regex, "attribute": &rs.Attribute, "script": &rs.Script,
		"body": &rs.Body, "secret": &rs.Secret, "prompt": &rs.Prompt, "list": &rs.List,
	}
	for name, p := range fields {
		v, err := recipe.Render(name, *p, d)
		if err != nil {
			return nil, templateError(in.rc.API, s, name, err)
		}
		*p = v
	}
	for _, m := range []struct {
		name string
		src  map[string]string
		dst  *map[string]string
	}{{"headers", s.Headers, &rs.Headers}, {"fields", s.Fields, &rs.Fields}} {
		if m.src == nil {
			continue
		}
		out := make(map[string]string, len(m.src))
		for k, v := range m.src {
			r, err := recipe.Render(m.name+"."+k, v, d)
			if err != nil {
				return nil, templateError(in.rc.API, s, m.name+"."+k, err)
			}
			out[k] = r
		}
		*m.dst = out
	}
	if s.InvalidIf != nil {
		r := *s.InvalidIf
		for name, p := range map[string]*string{"invalidIf.redirectTo": &r.RedirectTo, "invalidIf.bodyContains": &r.BodyContains, "invalidIf.bodyNotContains": &r.BodyNotContains} {
			v, err := recipe.Render(name, *p, d)
			if err != nil {
				return nil, templateError(in.rc.API, s, name, err)
			}
			*p = v
		}
		rs.InvalidIf = &r
	}
	return &rs, nil
}

// renderWhen executes the templates of a step's when condition.
func (in *interp) renderWhen(s *recipe.Step) (*recipe.Condition, error) {
	d := in.data()
	w := *s.When
	var err error
	if w.Selector, err = recipe.Render("when.selector", w.Selector, d); err != nil {
		return nil, templateError(in.rc.API, s, "when.selector", err)
	}
	if w.Contains, err = recipe.Render("when.contains", w.Contains, d); err != nil {
		return nil, templateError(in.rc.API, s, "when.contains", err)
	}
	return &w, nil
}

func templateError(_ *recipe.API, _ *recipe.Step, field string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "field "+field+": ")
	return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "field " + field + ": " + msg}
}

// data is what templates see now: vars change as totp and ask steps run.
func (in *interp) data() recipe.Data {
	d := recipe.Data{Params: in.rc.Params, Vars: in.vars, Session: in.rc.Session}
	if in.rc.Mode == ModeCreate {
		d.Credentials = in.rc.Credentials
	}
	return d
}
