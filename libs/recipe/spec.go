package recipe

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// spec says which fields a step kind takes.
type spec struct {
	// main is the field a scalar value sets ({click: "#x"} is {click: {selector: "#x"}}).
	main     string
	required []string
	optional []string
	// extra checks beyond required fields.
	extra func(s *Step, set map[string]bool) *fieldErr
}

type fieldErr struct{ field, msg string }

func (sp spec) fields() []string { return append(append([]string{}, sp.required...), sp.optional...) }

func (sp spec) check(s *Step, set map[string]bool) *fieldErr {
	for _, f := range sp.required {
		if !set[f] {
			return &fieldErr{f, "required"}
		}
	}
	if sp.extra != nil {
		return sp.extra(s, set)
	}
	return nil
}

func oneOf(fields ...string) func(*Step, map[string]bool) *fieldErr {
	return func(_ *Step, set map[string]bool) *fieldErr {
		n := 0
		for _, f := range fields {
			if set[f] {
				n++
			}
		}
		if n != 1 {
			return &fieldErr{strings.Join(fields, "|"), "set exactly one of " + strings.Join(fields, ", ")}
		}
		return nil
	}
}

var specs = map[Kind]spec{
	Goto:          {main: "url", required: []string{"url"}},
	Click:         {main: "selector", required: []string{"selector"}, optional: []string{"noWaitAfter"}},
	Fill:          {required: []string{"selector", "value"}},
	Press:         {main: "key", required: []string{"key"}, optional: []string{"selector", "noWaitAfter"}},
	Select:        {required: []string{"selector", "value"}},
	WaitVisible:   {main: "selector", required: []string{"selector"}},
	WaitHidden:    {main: "selector", required: []string{"selector"}},
	WaitURL:       {main: "contains", optional: []string{"contains", "regex"}, extra: oneOf("contains", "regex")},
	ExpectVisible: {main: "selector", required: []string{"selector"}},
	ExpectText:    {required: []string{"selector"}, optional: []string{"text", "contains", "regex"}, extra: oneOf("text", "contains", "regex")},
	ExpectURL:     {main: "contains", optional: []string{"contains", "regex"}, extra: oneOf("contains", "regex")},
	Extract: {required: []string{"as"}, optional: []string{"selector", "attribute", "list", "fields"}, extra: func(s *Step, set map[string]bool) *fieldErr {
		if set["list"] != set["fields"] {
			return &fieldErr{"list|fields", "a list extract needs both list (the row selector) and fields"}
		}
		if set["list"] == set["selector"] {
			return &fieldErr{"selector|list", "set either selector (one value) or list and fields (records)"}
		}
		if set["attribute"] && !set["selector"] {
			return &fieldErr{"attribute", "attribute goes with selector; in a list, write fields as \"sel@attr\""}
		}
		return nil
	}},
	Evaluate: {main: "script", required: []string{"script"}, optional: []string{"as"}},
	Request: {main: "url", required: []string{"url"}, optional: []string{"method", "headers", "body", "expectStatus", "invalidStatus", "redirect", "invalidIf", "as"}, extra: func(s *Step, _ map[string]bool) *fieldErr {
		switch strings.ToUpper(s.Method) {
		case "", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE":
		default:
			return &fieldErr{"method", "method must be GET, HEAD, POST, PUT, PATCH or DELETE"}
		}
		switch s.Redirect {
		case "", RedirectFollow, RedirectManual:
		default:
			return &fieldErr{"redirect", "redirect must be follow (the default) or manual"}
		}
		if s.Redirect == RedirectManual && s.InvalidIf != nil && s.InvalidIf.RedirectTo != "" {
			return &fieldErr{"invalidIf.redirectTo", "with redirect: manual the page cannot see where a redirect points; use redirected: true, or follow redirects"}
		}
		return nil
	}},
	TOTP: {main: "secret", required: []string{"secret"}, optional: []string{"as"}},
	Retry: {main: "from", required: []string{"from"}, extra: func(s *Step, _ map[string]bool) *fieldErr {
		if s.When == nil {
			return &fieldErr{"when", "a retry needs when: the condition (such as the site's error message) that sends the recipe back"}
		}
		return nil
	}},
	Ask: {required: []string{"field"}, optional: []string{"prompt", "choices", "wait"}, extra: func(s *Step, _ map[string]bool) *fieldErr {
		if s.Duration < 0 || s.Duration > MaxAskWait {
			return &fieldErr{"wait", fmt.Sprintf("wait must be at most %s", MaxAskWait)}
		}
		return nil
	}},
	Screenshot: {main: "as", optional: []string{"as", "fullPage"}},
	Fail: {main: "reason", required: []string{"reason"}, optional: []string{"message"}, extra: func(s *Step, _ map[string]bool) *fieldErr {
		if !slices.Contains(failAsValues, s.Reason) {
			return &fieldErr{"reason", "reason must be one of " + strings.Join(failAsValues, ", ")}
		}
		return nil
	}},
	Sleep: {main: "duration", required: []string{"duration"}, extra: func(s *Step, _ map[string]bool) *fieldErr {
		if s.Duration <= 0 || s.Duration > MaxSleep {
			return &fieldErr{"duration", fmt.Sprintf("sleep must be between 0 and %s", MaxSleep)}
		}
		return nil
	}},
}

// setField decodes one field of a step.
func setField(s *Step, name string, v *yaml.Node) error {
	str := map[string]*string{
		"url": &s.URL, "selector": &s.Selector, "value": &s.Value, "key": &s.Key, "text": &s.Text,
		"contains": &s.Contains, "regex": &s.Regex, "attribute": &s.Attribute, "as": &s.As,
		"script": &s.Script, "method": &s.Method, "body": &s.Body, "secret": &s.Secret,
		"field": &s.Field, "prompt": &s.Prompt, "list": &s.List, "reason": &s.Reason, "message": &s.Message,
		"redirect": &s.Redirect, "from": &s.From,
	}
	if p, ok := str[name]; ok {
		if v.Kind != yaml.ScalarNode {
			return fmt.Errorf("must be a string")
		}
		*p = v.Value
		if *p == "" && name != "value" && name != "body" {
			return fmt.Errorf("must not be empty")
		}
		return nil
	}
	switch name {
	case "fields", "headers":
		m := map[string]string{}
		if err := v.Decode(&m); err != nil || len(m) == 0 {
			return fmt.Errorf("must map names to strings")
		}
		if name == "fields" {
			s.Fields = m
		} else {
			s.Headers = m
		}
	case "expectStatus", "invalidStatus":
		codes, err := statuses(v)
		if err != nil {
			return err
		}
		if name == "expectStatus" {
			s.ExpectStatus = codes
		} else {
			s.InvalidStatus = codes
		}
	case "choices":
		if err := v.Decode(&s.Choices); err != nil {
			return fmt.Errorf("must be a list of strings")
		}
	case "wait", "duration":
		d, err := duration(v)
		if err != nil {
			return err
		}
		s.Duration = d
	case "fullPage", "noWaitAfter":
		p := map[string]*bool{"fullPage": &s.FullPage, "noWaitAfter": &s.NoWaitAfter}[name]
		if err := v.Decode(p); err != nil {
			return fmt.Errorf("must be true or false")
		}
	case "invalidIf":
		r, err := parseInvalidIf(v)
		if err != nil {
			return err
		}
		s.InvalidIf = r
	default:
		return fmt.Errorf("unknown field")
	}
	return nil
}

func statuses(v *yaml.Node) ([]int, error) {
	var raw []string
	if v.Kind == yaml.ScalarNode {
		raw = []string{v.Value}
	} else if err := v.Decode(&raw); err != nil {
		return nil, fmt.Errorf("must be an HTTP status or a list of them")
	}
	out := make([]int, 0, len(raw))
	for _, r := range raw {
		c, err := strconv.Atoi(r)
		if err != nil || c < 100 || c > 599 {
			return nil, fmt.Errorf("%q is not an HTTP status", r)
		}
		out = append(out, c)
	}
	return out, nil
}
