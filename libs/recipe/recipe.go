// Package recipe parses and validates automation bundles: folders of YAML files that
// define named APIs as lists of steps (DESIGN.md section 7). The registry validates a
// bundle with it when one is deployed; the runner interprets the parsed steps.
//
// A file looks like this:
//
//	vars:
//	  baseURL: http://127.0.0.1:7490
//	apis:
//	  auth-sessions/create:
//	    description: Log in with a password
//	    steps:
//	      - goto: "{{ .Vars.baseURL }}/login"
//	      - fill: { selector: "#username", value: "{{ .Credentials.username }}" }
//	      - click: "#login-button"
//	      - expectVisible: { selector: "#user-menu", failAs: INVALID_CREDENTIALS }
//
// A step is a mapping with exactly one kind key (goto, click, ...) whose value is either
// the kind's main field as a scalar or a mapping of its fields, plus the options every
// step takes: name, optional, timeout, failAs and when. String fields are Go templates over
// .Params, .Credentials (create only), .Vars and .Session.
package recipe

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Names of the APIs that make AuthSessions work.
const (
	CreateAPI = "auth-sessions/create"
	CheckAPI  = "auth-sessions/check"
)

// Limits of a bundle, so a deploy cannot exhaust the registry or a runner.
const (
	MaxFiles     = 64
	MaxFileBytes = 256 << 10
	MaxSteps     = 200
	MaxSleep     = 30 * time.Second
	MaxTimeout   = 5 * time.Minute
	MaxAskWait   = 30 * time.Minute
)

// Kind is a step kind.
type Kind string

// The step kinds of DESIGN.md section 7.
const (
	Goto          Kind = "goto"
	Click         Kind = "click"
	Fill          Kind = "fill"
	Press         Kind = "press"
	Select        Kind = "select"
	WaitVisible   Kind = "waitVisible"
	WaitHidden    Kind = "waitHidden"
	WaitURL       Kind = "waitURL"
	ExpectVisible Kind = "expectVisible"
	ExpectText    Kind = "expectText"
	ExpectURL     Kind = "expectURL"
	Extract       Kind = "extract"
	Evaluate      Kind = "evaluate"
	Request       Kind = "request"
	TOTP          Kind = "totp"
	Ask           Kind = "ask"
	Screenshot    Kind = "screenshot"
	Sleep         Kind = "sleep"
	// Fail stops the API with a typed failure (with when, "if the page says so").
	Fail Kind = "fail"
	// Retry, when its condition holds, goes back once to an earlier named step (a
	// TOTP code the site refused: back to the totp step for a fresh one).
	Retry Kind = "retry"
)

// FailAs values a step may declare: how a recipe says what a failure means.
var failAsValues = []string{
	"INVALID_CREDENTIALS", "ACCOUNT_LOCKED", "RATE_LIMITED", "CAPTCHA_BLOCKED",
	"MORE_INFO_REQUIRED", "TIMEOUT", "TRANSIENT", "SCRIPT_ERROR",
}

// Bundle is a parsed, valid bundle.
type Bundle struct {
	// Vars are the bundle's default .Vars; a session's vars override them.
	Vars map[string]string
	// APIs by name.
	APIs map[string]*API
}

// API is one named automation.
type API struct {
	Name        string
	File        string
	Description string
	Steps       []*Step
}

// Step is one parsed step. Only the fields of its kind are set.
type Step struct {
	// Index is the step's position in its API, from 0.
	Index int
	Kind  Kind
	// Line is where the step starts in its file.
	Line int

	Name     string
	Optional bool
	// Timeout bounds the step; 0 means the runner's default.
	Timeout time.Duration
	// FailAs is the failure reason to report when the step fails, if set.
	FailAs string
	// When, if set, runs the step only if its condition holds at that moment.
	When *Condition

	URL       string
	Selector  string
	Value     string
	Key       string
	Text      string
	Contains  string
	Regex     string
	Attribute string
	As        string
	Script    string
	Method    string
	Body      string
	Secret    string
	Field     string
	Prompt    string
	// List is the row selector of an extract that yields a list of records.
	List string
	// Fields are the per-row fields of a list extract: output name to selector, with
	// an optional "@attr" suffix ("a.link@href").
	Fields  map[string]string
	Headers map[string]string
	// ExpectStatus lists acceptable HTTP statuses of a request (default: 2xx).
	ExpectStatus []int
	// InvalidStatus lists statuses that mean "not logged in" (default: 401, 403).
	InvalidStatus []int
	// Redirect is how a request treats redirects: RedirectFollow ("" too) or
	// RedirectManual.
	Redirect string
	// InvalidIf are a request's rules over the answer that mean "not logged in".
	InvalidIf *InvalidIf
	// NoWaitAfter makes a click or press return at once instead of waiting for a
	// navigation it starts to commit.
	NoWaitAfter bool
	// From names the step a retry goes back to.
	From    string
	Choices []string
	// Duration is how long a sleep sleeps, or how long an ask waits for its answer.
	Duration time.Duration
	FullPage bool
	// Reason and Message are a fail step's typed failure and its human-readable text.
	Reason  string
	Message string
}

// Condition is a step's when: an element matching Selector is present and visible,
// and, if Contains is set, its text contains it.
type Condition struct {
	Selector string
	Contains string
}

// Describe names the step for errors and spans: index, kind and selector — never a
// value, which may be a credential.
func (s *Step) Describe() string {
	d := fmt.Sprintf("step %d (%s)", s.Index, s.Kind)
	if s.Name != "" {
		d += fmt.Sprintf(" %q", s.Name)
	}
	if s.Selector != "" {
		d += " selector " + s.Selector
	} else if s.List != "" {
		d += " list " + s.List
	}
	return d
}

// Error is one problem with a bundle, naming where it is.
type Error struct {
	File  string
	API   string
	Line  int
	Step  int // -1 when the problem is not in a step
	Kind  Kind
	Field string
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.API != "" {
		fmt.Fprintf(&b, ": api %s", e.API)
	}
	if e.Step >= 0 {
		fmt.Fprintf(&b, ": step %d", e.Step)
		if e.Kind != "" {
			fmt.Fprintf(&b, " (%s)", e.Kind)
		}
	}
	if e.Field != "" {
		fmt.Fprintf(&b, ": field %s", e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// ErrInvalid wraps every validation failure, so callers can map it to InvalidArgument.
var ErrInvalid = errors.New("invalid bundle")
