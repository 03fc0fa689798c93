package recipe

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Redirect modes of a request step.
const (
	// RedirectFollow follows redirects (the default); the answer is the last one, and
	// invalidIf.redirectTo can match where they led.
	RedirectFollow = "follow"
	// RedirectManual does not follow them: a redirect is answered as such (status 0,
	// no body, its target hidden from the page), which invalidIf.redirected matches.
	RedirectManual = "manual"
)

// Limits of a request's invalidIf.
const (
	MaxJSONRules    = 16
	MaxJSONPathSegs = 32
	maxJSONPathLen  = 256
)

// InvalidIf are rules over a request's answer, each of which means "this state is not
// logged in": in a check, INVALID. Any rule that matches decides; a failure names the
// rule, never the answer (a body may hold secrets).
type InvalidIf struct {
	// Redirected matches when the site answered with a redirect (followed or not).
	Redirected bool
	// RedirectTo matches when redirects were followed and the final URL is this path
	// (or below it: "/login" matches "/login", "/login/sso" and "/login?next=/x", not
	// "/logins"), or, when it is an absolute URL, on that origin and path.
	RedirectTo string
	// BodyContains matches when the answer's body contains the text.
	BodyContains string
	// BodyNotContains matches when the answer's body does not contain the text.
	BodyNotContains string
	// JSON rules look into the body as JSON; a body that is not JSON answers none of
	// them, and the step cannot tell (INCONCLUSIVE).
	JSON []JSONRule
}

// JSON rule operators.
const (
	JSONEquals    = "equals"
	JSONNotEquals = "notEquals"
	JSONMissing   = "missing"
)

// JSONRule tests one value of a JSON body.
type JSONRule struct {
	Path JSONPath
	// Op is JSONEquals, JSONNotEquals or JSONMissing.
	Op string
	// Value is what equals and notEquals compare with: nil, a bool, a float64 or a
	// string.
	Value any
}

// Matches reports whether the rule holds for the decoded JSON document doc: equals
// when the path's value is Value, notEquals when it is missing or another value,
// missing when the path leads nowhere. Numbers compare as float64; objects and arrays
// equal no value.
func (r JSONRule) Matches(doc any) bool {
	v, ok := r.Path.Lookup(doc)
	switch r.Op {
	case JSONMissing:
		return !ok
	case JSONEquals:
		return ok && scalarEqual(v, r.Value)
	case JSONNotEquals:
		return !ok || !scalarEqual(v, r.Value)
	}
	return false
}

func scalarEqual(a, b any) bool {
	switch a.(type) {
	case nil, bool, float64, string:
		return a == b
	}
	return false
}

// JSONPath is a dot path into a JSON document: "error.code", "data.user.id",
// "errors.0.code". Each segment is an object's key or, on an array, a decimal index
// from 0. Keys that contain a dot cannot be named.
type JSONPath struct {
	raw  string
	segs []string
}

// ParseJSONPath parses a dot path.
func ParseJSONPath(s string) (JSONPath, error) {
	if s == "" {
		return JSONPath{}, fmt.Errorf("empty path; write a dot path such as error.code")
	}
	if len(s) > maxJSONPathLen {
		return JSONPath{}, fmt.Errorf("longer than %d characters", maxJSONPathLen)
	}
	segs := strings.Split(s, ".")
	if len(segs) > MaxJSONPathSegs {
		return JSONPath{}, fmt.Errorf("more than %d segments", MaxJSONPathSegs)
	}
	for _, seg := range segs {
		if seg == "" {
			return JSONPath{}, fmt.Errorf("%q has an empty segment; write a dot path such as error.code or items.0.id", s)
		}
		if strings.ContainsAny(seg, " \t\n[]$*") {
			return JSONPath{}, fmt.Errorf("%q: a segment is a key or an array index, such as items.0.id (no spaces, brackets or wildcards)", s)
		}
	}
	return JSONPath{raw: s, segs: segs}, nil
}

// String is the path as written.
func (p JSONPath) String() string { return p.raw }

// Lookup follows the path in doc (as encoding/json decodes into any) and returns the
// value it leads to, or false when it leads nowhere.
func (p JSONPath) Lookup(doc any) (any, bool) {
	cur := doc
	for _, seg := range p.segs {
		switch v := cur.(type) {
		case map[string]any:
			next, ok := v[seg]
			if !ok {
				return nil, false
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(v) || strconv.Itoa(i) != seg {
				return nil, false
			}
			cur = v[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// nestedErr is a problem inside a step field that is a mapping, naming the nested
// field (invalidIf.json[1].path) and its line.
type nestedErr struct {
	field, msg string
	line       int
}

func (e *nestedErr) Error() string { return e.msg }

// parseInvalidIf decodes a request's invalidIf mapping. Its errors name the rule
// (invalidIf.json[1].path).
func parseInvalidIf(n *yaml.Node) (*InvalidIf, error) {
	if n.Kind != yaml.MappingNode || len(n.Content) == 0 {
		return nil, &nestedErr{"invalidIf", "must be a mapping of rules: redirected, redirectTo, bodyContains, bodyNotContains, json", n.Line}
	}
	out := &InvalidIf{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		field := "invalidIf." + k.Value
		str := func(p *string) error {
			if v.Kind != yaml.ScalarNode || v.Value == "" {
				return &nestedErr{field, "must be a non-empty string", v.Line}
			}
			*p = v.Value
			return nil
		}
		var err error
		switch k.Value {
		case "redirected":
			if v.Decode(&out.Redirected) != nil || !out.Redirected {
				err = &nestedErr{field, "must be true (leave it out otherwise)", v.Line}
			}
		case "redirectTo":
			if err = str(&out.RedirectTo); err == nil {
				if msg := CheckRedirectTo(out.RedirectTo); msg != "" && !strings.Contains(out.RedirectTo, "{{") {
					err = &nestedErr{field, msg, v.Line}
				}
			}
		case "bodyContains":
			err = str(&out.BodyContains)
		case "bodyNotContains":
			err = str(&out.BodyNotContains)
		case "json":
			out.JSON, err = parseJSONRules(v)
		default:
			err = &nestedErr{field, "unknown rule; invalidIf takes redirected, redirectTo, bodyContains, bodyNotContains, json", k.Line}
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// CheckRedirectTo says what is wrong with a rendered redirectTo, or "".
func CheckRedirectTo(s string) string {
	if strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "//") && !strings.ContainsAny(s, "?#") {
		return ""
	}
	if u, err := url.Parse(s); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.RawQuery == "" && u.Fragment == "" {
		return ""
	}
	return "must be a path such as /login, or an absolute http(s) URL, without query or fragment"
}

func parseJSONRules(n *yaml.Node) ([]JSONRule, error) {
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = n.Content
	}
	if len(items) == 0 || len(items) > MaxJSONRules {
		return nil, &nestedErr{"invalidIf.json", fmt.Sprintf("must be one rule or a list of 1 to %d", MaxJSONRules), n.Line}
	}
	out := make([]JSONRule, 0, len(items))
	for i, it := range items {
		name := "invalidIf.json"
		if n.Kind == yaml.SequenceNode {
			name = fmt.Sprintf("invalidIf.json[%d]", i)
		}
		r, err := parseJSONRule(name, it)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func parseJSONRule(name string, n *yaml.Node) (JSONRule, error) {
	var r JSONRule
	shape := &nestedErr{name, "a json rule is {path: error.code, equals: denied}, {path: ..., notEquals: ...} or {path: ..., missing: true}", n.Line}
	if n.Kind != yaml.MappingNode {
		return r, shape
	}
	hasPath := false
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "path":
			p, err := ParseJSONPath(v.Value)
			if v.Kind != yaml.ScalarNode || err != nil {
				msg := "must be a dot path such as error.code"
				if err != nil {
					msg = err.Error()
				}
				return r, &nestedErr{name + ".path", msg, v.Line}
			}
			r.Path, hasPath = p, true
		case JSONEquals, JSONNotEquals, JSONMissing:
			if r.Op != "" {
				return r, &nestedErr{name, "set exactly one of equals, notEquals, missing", k.Line}
			}
			r.Op = k.Value
			if k.Value == JSONMissing {
				var b bool
				if v.Decode(&b) != nil || !b {
					return r, &nestedErr{name + ".missing", "must be true; to require a value, use notEquals", v.Line}
				}
				continue
			}
			val, err := scalarValue(v)
			if err != nil {
				return r, &nestedErr{name + "." + k.Value, err.Error(), v.Line}
			}
			r.Value = val
		default:
			return r, &nestedErr{name + "." + k.Value, "unknown key; a json rule has path and one of equals, notEquals, missing", k.Line}
		}
	}
	if !hasPath {
		return r, &nestedErr{name + ".path", "required", n.Line}
	}
	if r.Op == "" {
		return r, shape
	}
	return r, nil
}

// scalarValue decodes a YAML scalar as the JSON value it stands for.
func scalarValue(v *yaml.Node) (any, error) {
	if v.Kind != yaml.ScalarNode {
		return nil, fmt.Errorf("must be a string, number, true, false or null")
	}
	switch v.ShortTag() {
	case "!!null":
		return nil, nil
	case "!!bool":
		var b bool
		err := v.Decode(&b)
		return b, err
	case "!!int", "!!float":
		var f float64
		if err := v.Decode(&f); err != nil {
			return nil, fmt.Errorf("%q is not a number", v.Value)
		}
		return f, nil
	}
	return v.Value, nil
}
