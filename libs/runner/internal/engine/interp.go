package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"google.golang.org/protobuf/types/known/structpb"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// interp runs one recipe API in a task's tab.
type interp struct {
	e      *execution
	api    *recipe.API
	mode   mode
	vars   map[string]string
	output map[string]any
}

// run executes the steps in order; the first failure ends the API.
func (in *interp) run(ctx context.Context) error {
	for _, s := range in.api.Steps {
		if err := in.step(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// step runs one step in its own span, named after its kind.
func (in *interp) step(ctx context.Context, s *recipe.Step) (err error) {
	ctx, span := in.e.r.tracer.Start(ctx, string(s.Kind))
	span.SetAttributes(attribute.Int("latchkey.step.index", s.Index), attribute.String("latchkey.step.kind", string(s.Kind)),
		attribute.String("latchkey.api", in.api.Name), attribute.String("latchkey.file", in.api.File))
	if sel := s.Selector + s.List; sel != "" {
		span.SetAttributes(attribute.String("latchkey.step.selector", sel))
	}
	start := time.Now()
	status := "ok"
	var ignored error
	defer func() {
		if err != nil {
			span.SetStatus(codes.Error, "step failed")
		}
		span.SetAttributes(attribute.String("latchkey.step.status", status))
		span.End()
		if in.e.observer != nil {
			in.e.observer(sdk.StepEvent{API: in.api.Name, Index: s.Index, Kind: s.Kind, Name: s.Name, Selector: s.Selector + s.List, Status: status, Duration: time.Since(start), Err: errors.Join(err, ignored)})
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
	timeout := in.e.r.cfg.StepTimeout
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
		return in.e.browserError(ctx, err)
	}
	if s.Optional {
		status = "ignored"
		span.AddEvent("optional step failed")
		in.e.r.log.DebugContext(ctx, "optional step failed", "api", in.api.Name, "step", s.Index, "kind", string(s.Kind))
		ignored = err
		return nil
	}
	status = "failed"
	if in.e.bcDead() {
		return sdk.Infra("step %d (%s): %w", s.Index, s.Kind, err)
	}
	return in.fail(ctx, s, err)
}

// fail types a step's failure for the API's mode, names the step, and stores a
// screenshot of the page.
func (in *interp) fail(ctx context.Context, s *recipe.Step, err error) error {
	f := in.classify(s, err)
	f.Step = &sdk.StepRef{File: in.api.File, API: in.api.Name, Index: s.Index, Kind: string(s.Kind), Selector: s.Selector + s.List}
	where := s.Describe()
	f.Message = fmt.Sprintf("%s: api %s: %s: %s", in.api.File, in.api.Name, where, f.Message)
	if id, aerr := in.e.screenshot(ctx, s); aerr == nil && id != "" {
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
	if in.mode == modeCreate && f.Reason == reasonTransient && se != nil && se.status == 429 {
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
type (
	reasonT  = latchkeyv1.FailureReason
	outcomeT = latchkeyv1.CheckOutcome
)

type stepError struct {
	reason  reasonT
	outcome outcomeT
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
			return nil, templateError(in.api, s, name, err)
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
				return nil, templateError(in.api, s, m.name+"."+k, err)
			}
			out[k] = r
		}
		*m.dst = out
	}
	return &rs, nil
}

// renderWhen executes the templates of a step's when condition.
func (in *interp) renderWhen(s *recipe.Step) (*recipe.Condition, error) {
	d := in.data()
	w := *s.When
	var err error
	if w.Selector, err = recipe.Render("when.selector", w.Selector, d); err != nil {
		return nil, templateError(in.api, s, "when.selector", err)
	}
	if w.Contains, err = recipe.Render("when.contains", w.Contains, d); err != nil {
		return nil, templateError(in.api, s, "when.contains", err)
	}
	return &w, nil
}

func templateError(_ *recipe.API, _ *recipe.Step, field string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "field "+field+": ")
	return &stepError{reason: reasonScript, outcome: outcomeInconclusive, msg: "field " + field + ": " + msg}
}

// data is what templates see now: vars change as totp and ask steps run.
func (in *interp) data() recipe.Data {
	t := in.e.task
	params := map[string]any{}
	if t.GetParams() != nil {
		params = t.GetParams().AsMap()
	}
	d := recipe.Data{Params: params, Vars: in.vars, Session: recipe.SessionData{ID: t.GetSession().GetAuthSessionId(), ProjectID: t.GetProjectId()}}
	if in.mode == modeCreate {
		d.Credentials = in.e.creds
	}
	return d
}

// toValue converts a program's output to a JSON value.
func toValue(out any) (*structpb.Value, error) {
	b, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return structpb.NewValue(v)
}

// toStruct converts params to a protobuf Struct.
func toStruct(m map[string]any) (*structpb.Struct, error) {
	if m == nil {
		return nil, nil
	}
	v, err := toValue(m)
	if err != nil {
		return nil, err
	}
	return v.GetStructValue(), nil
}
