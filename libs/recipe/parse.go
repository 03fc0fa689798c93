package recipe

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// File is one file of a bundle.
type File struct {
	Path    string
	Content []byte
}

// Options tune Parse.
type Options struct {
	// RequireAuthSessions demands auth-sessions/create and auth-sessions/check.
	RequireAuthSessions bool
}

// Parse parses and validates a bundle. Every problem found is reported, each as an
// *Error naming file, API, step and field, joined and wrapping ErrInvalid.
func Parse(files []File, opts Options) (*Bundle, error) {
	p := &parser{b: &Bundle{Vars: map[string]string{}, APIs: map[string]*API{}}}
	if len(files) == 0 {
		p.fail(&Error{File: "(bundle)", Step: -1, Msg: "the bundle has no files"})
	}
	if len(files) > MaxFiles {
		p.fail(&Error{File: "(bundle)", Step: -1, Msg: fmt.Sprintf("the bundle has %d files, at most %d are allowed", len(files), MaxFiles)})
	}
	seen := map[string]bool{}
	for _, f := range files {
		switch {
		case !validPath(f.Path):
			p.fail(&Error{File: f.Path, Step: -1, Msg: "file paths must be relative, slash-separated and end in .yaml or .yml"})
		case seen[f.Path]:
			p.fail(&Error{File: f.Path, Step: -1, Msg: "the file appears twice"})
		case len(f.Content) > MaxFileBytes:
			p.fail(&Error{File: f.Path, Step: -1, Msg: fmt.Sprintf("the file is %d bytes, at most %d are allowed", len(f.Content), MaxFileBytes)})
		default:
			seen[f.Path] = true
			p.file(f)
		}
	}
	if opts.RequireAuthSessions {
		for _, name := range []string{CreateAPI, CheckAPI} {
			if p.b.APIs[name] == nil {
				p.fail(&Error{File: "(bundle)", API: name, Step: -1, Msg: "AuthSessions need this API; define it in one of the files"})
			}
		}
	}
	if len(p.errs) > 0 {
		return nil, errors.Join(append([]error{ErrInvalid}, p.errs...)...)
	}
	return p.b, nil
}

func validPath(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") || path.Clean(p) != p || strings.HasPrefix(p, "..") {
		return false
	}
	return strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")
}

type parser struct {
	b    *Bundle
	errs []error
}

func (p *parser) fail(e *Error) { p.errs = append(p.errs, e) }

func (p *parser) file(f File) {
	var root yaml.Node
	if err := yaml.Unmarshal(f.Content, &root); err != nil {
		p.fail(&Error{File: f.Path, Step: -1, Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")})
		return
	}
	if len(root.Content) == 0 {
		p.fail(&Error{File: f.Path, Step: -1, Msg: "the file is empty"})
		return
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		p.fail(&Error{File: f.Path, Line: doc.Line, Step: -1, Msg: "the file must be a mapping with 'apis' (and optionally 'vars')"})
		return
	}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		key, val := doc.Content[i], doc.Content[i+1]
		switch key.Value {
		case "vars":
			var vars map[string]string
			if err := val.Decode(&vars); err != nil {
				p.fail(&Error{File: f.Path, Line: val.Line, Step: -1, Field: "vars", Msg: "vars must map names to strings"})
				continue
			}
			for k, v := range vars {
				if old, dup := p.b.Vars[k]; dup && old != v {
					p.fail(&Error{File: f.Path, Line: val.Line, Step: -1, Field: "vars." + k, Msg: "defined differently in another file"})
				}
				p.b.Vars[k] = v
			}
		case "apis":
			p.apis(f.Path, val)
		default:
			p.fail(&Error{File: f.Path, Line: key.Line, Step: -1, Field: key.Value, Msg: "unknown top-level key; expected 'apis' or 'vars'"})
		}
	}
}

func (p *parser) apis(file string, n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		p.fail(&Error{File: file, Line: n.Line, Step: -1, Field: "apis", Msg: "apis must map API names to definitions"})
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		name, def := n.Content[i].Value, n.Content[i+1]
		if !validAPIName(name) {
			p.fail(&Error{File: file, Line: n.Content[i].Line, API: name, Step: -1, Msg: "API names are lowercase letters, digits, dashes and slashes, like list-invoices"})
			continue
		}
		if other := p.b.APIs[name]; other != nil {
			p.fail(&Error{File: file, Line: n.Content[i].Line, API: name, Step: -1, Msg: "already defined in " + other.File})
			continue
		}
		if api := p.api(file, name, def); api != nil {
			p.b.APIs[name] = api
		}
	}
}

func validAPIName(s string) bool {
	if s == "" || len(s) > 128 || strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") || strings.Contains(s, "//") {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '/' || r == '_') {
			return false
		}
	}
	return true
}

func (p *parser) api(file, name string, n *yaml.Node) *API {
	api := &API{Name: name, File: file}
	if n.Kind != yaml.MappingNode {
		p.fail(&Error{File: file, Line: n.Line, API: name, Step: -1, Msg: "an API must be a mapping with 'steps'"})
		return nil
	}
	var steps *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		switch k, v := n.Content[i], n.Content[i+1]; k.Value {
		case "description":
			api.Description = v.Value
		case "steps":
			steps = v
		default:
			p.fail(&Error{File: file, Line: k.Line, API: name, Step: -1, Field: k.Value, Msg: "unknown key; an API has 'description' and 'steps'"})
		}
	}
	if steps == nil || steps.Kind != yaml.SequenceNode || len(steps.Content) == 0 {
		p.fail(&Error{File: file, Line: n.Line, API: name, Step: -1, Field: "steps", Msg: "an API needs a non-empty list of steps"})
		return nil
	}
	if len(steps.Content) > MaxSteps {
		p.fail(&Error{File: file, Line: steps.Line, API: name, Step: -1, Field: "steps", Msg: fmt.Sprintf("%d steps, at most %d are allowed", len(steps.Content), MaxSteps)})
		return nil
	}
	before := len(p.errs)
	for i, sn := range steps.Content {
		if s := p.step(file, name, i, sn); s != nil {
			api.Steps = append(api.Steps, s)
		}
	}
	if len(p.errs) > before {
		return nil
	}
	p.retryTargets(file, api)
	if len(p.errs) > before {
		return nil
	}
	return api
}

// retryTargets checks that every retry step names one earlier step of its API.
func (p *parser) retryTargets(file string, api *API) {
	for _, s := range api.Steps {
		if s.Kind != Retry {
			continue
		}
		var found []*Step
		for _, t := range api.Steps {
			if t.Name == s.From {
				found = append(found, t)
			}
		}
		msg := ""
		switch {
		case len(found) == 0:
			msg = fmt.Sprintf("no step is named %q; give the step to go back to a name", s.From)
		case len(found) > 1:
			msg = fmt.Sprintf("%d steps are named %q; a retry needs one", len(found), s.From)
		case found[0].Index >= s.Index:
			msg = fmt.Sprintf("step %q comes at or after the retry; a retry goes back to an earlier step", s.From)
		}
		if msg != "" {
			p.fail(&Error{File: file, Line: s.Line, API: api.Name, Step: s.Index, Kind: s.Kind, Field: "from", Msg: msg})
		}
	}
}

// RetryTarget returns the index of the step a retry step goes back to.
func (a *API) RetryTarget(s *Step) int {
	for _, t := range a.Steps {
		if t.Name == s.From {
			return t.Index
		}
	}
	return -1
}

func (p *parser) step(file, api string, index int, n *yaml.Node) *Step {
	fail := func(line int, kind Kind, field, msg string) {
		p.fail(&Error{File: file, Line: line, API: api, Step: index, Kind: kind, Field: field, Msg: msg})
	}
	// failField reports a field's error, naming the nested field of a mapping field.
	failField := func(line int, kind Kind, field string, err error) {
		if ne, ok := errors.AsType[*nestedErr](err); ok {
			fail(ne.line, kind, ne.field, ne.msg)
			return
		}
		fail(line, kind, field, err.Error())
	}
	if n.Kind != yaml.MappingNode {
		fail(n.Line, "", "", "a step must be a mapping such as {click: \"#login\"}")
		return nil
	}
	s := &Step{Index: index, Line: n.Line}
	var body *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if _, isKind := specs[Kind(k.Value)]; isKind {
			if s.Kind != "" {
				fail(k.Line, s.Kind, k.Value, "a step has exactly one kind; found "+string(s.Kind)+" and "+k.Value)
				return nil
			}
			s.Kind, body = Kind(k.Value), v
			continue
		}
		if err := setCommon(s, k.Value, v); err != nil {
			fail(k.Line, "", k.Value, err.Error())
			return nil
		}
	}
	if s.Kind == "" {
		fail(n.Line, "", "", "no step kind; one of "+strings.Join(kindNames(), ", "))
		return nil
	}
	sp := specs[s.Kind]
	set := map[string]bool{}
	switch body.Kind {
	case yaml.ScalarNode:
		if sp.main == "" {
			fail(body.Line, s.Kind, "", "this step needs a mapping of fields: "+strings.Join(sp.fields(), ", "))
			return nil
		}
		if err := setField(s, sp.main, body); err != nil {
			failField(body.Line, s.Kind, sp.main, err)
			return nil
		}
		set[sp.main] = true
	case yaml.MappingNode:
		for i := 0; i+1 < len(body.Content); i += 2 {
			k, v := body.Content[i], body.Content[i+1]
			if !slices.Contains(sp.fields(), k.Value) {
				if isCommon(k.Value) {
					if err := setCommon(s, k.Value, v); err != nil {
						fail(k.Line, s.Kind, k.Value, err.Error())
						return nil
					}
					continue
				}
				fail(k.Line, s.Kind, k.Value, "unknown field; "+string(s.Kind)+" takes "+strings.Join(sp.fields(), ", "))
				return nil
			}
			if err := setField(s, k.Value, v); err != nil {
				failField(k.Line, s.Kind, k.Value, err)
				return nil
			}
			set[k.Value] = true
		}
	default:
		fail(body.Line, s.Kind, "", "the step's value must be a string or a mapping")
		return nil
	}
	if err := sp.check(s, set); err != nil {
		fail(s.Line, s.Kind, err.field, err.msg)
		return nil
	}
	if err := checkTemplates(s, api); err != nil {
		fail(s.Line, s.Kind, err.field, err.msg)
		return nil
	}
	return s
}

func kindNames() []string {
	out := make([]string, 0, len(specs))
	for k := range specs {
		out = append(out, string(k))
	}
	sort.Strings(out)
	return out
}

func isCommon(key string) bool {
	return key == "name" || key == "optional" || key == "timeout" || key == "failAs" || key == "when"
}

func setCommon(s *Step, key string, v *yaml.Node) error {
	switch key {
	case "name":
		s.Name = v.Value
	case "optional":
		return v.Decode(&s.Optional)
	case "timeout":
		d, err := duration(v)
		if err != nil {
			return err
		}
		if d <= 0 || d > MaxTimeout {
			return fmt.Errorf("timeout must be between 0 and %s", MaxTimeout)
		}
		s.Timeout = d
	case "failAs":
		if !slices.Contains(failAsValues, v.Value) {
			return fmt.Errorf("failAs must be one of %s", strings.Join(failAsValues, ", "))
		}
		s.FailAs = v.Value
	case "when":
		c := &Condition{}
		switch v.Kind {
		case yaml.ScalarNode:
			c.Selector = v.Value
		case yaml.MappingNode:
			var m struct {
				Selector string `yaml:"selector"`
				Contains string `yaml:"contains"`
			}
			if err := v.Decode(&m); err != nil {
				return fmt.Errorf("when is a selector or {selector, contains}")
			}
			c.Selector, c.Contains = m.Selector, m.Contains
		}
		if c.Selector == "" {
			return fmt.Errorf("when needs a selector")
		}
		s.When = c
	default:
		return fmt.Errorf("unknown key; a step has one kind (%s) and the options name, optional, timeout, failAs, when", strings.Join(kindNames(), ", "))
	}
	return nil
}

func duration(v *yaml.Node) (time.Duration, error) {
	d, err := time.ParseDuration(v.Value)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as 500ms or 10s", v.Value)
	}
	return d, nil
}
