package recipe

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/template"
)

// Data is what templates see.
type Data struct {
	Params map[string]any
	// Credentials are set for auth-sessions/create only.
	Credentials map[string]string
	Vars        map[string]string
	Session     SessionData
}

// SessionData describes the session a step runs in.
type SessionData struct {
	ID        string
	ProjectID string
}

// funcs are the template functions recipes may use.
var funcs = template.FuncMap{
	"default": func(def, v any) any {
		if v == nil || v == "" {
			return def
		}
		return v
	},
	"trim":  strings.TrimSpace,
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
}

func parseTemplate(name, text string) (*template.Template, error) {
	return template.New(name).Funcs(funcs).Option("missingkey=error").Parse(text)
}

// Render executes one templated field against d. Errors name the field and what is
// missing, never a value of d.
func Render(field, text string, d Data) (string, error) {
	if !strings.Contains(text, "{{") {
		return text, nil
	}
	t, err := parseTemplate(field, text)
	if err != nil {
		return "", fmt.Errorf("field %s: %w", field, err)
	}
	var b strings.Builder
	if err := t.Execute(&b, d); err != nil {
		return "", fmt.Errorf("field %s: template refers to something this run does not have (check .Params, .Vars and .Credentials names)", field)
	}
	return b.String(), nil
}

// templated returns the step's string fields that are templates, by field name.
func templated(s *Step) map[string]string {
	m := map[string]string{
		"url": s.URL, "selector": s.Selector, "value": s.Value, "key": s.Key, "text": s.Text,
		"contains": s.Contains, "regex": s.Regex, "attribute": s.Attribute, "script": s.Script,
		"body": s.Body, "secret": s.Secret, "prompt": s.Prompt, "list": s.List,
	}
	if s.When != nil {
		m["when.selector"], m["when.contains"] = s.When.Selector, s.When.Contains
	}
	if r := s.InvalidIf; r != nil {
		m["invalidIf.redirectTo"], m["invalidIf.bodyContains"], m["invalidIf.bodyNotContains"] = r.RedirectTo, r.BodyContains, r.BodyNotContains
	}
	for k, v := range s.Headers {
		m["headers."+k] = v
	}
	for k, v := range s.Fields {
		m["fields."+k] = v
	}
	maps.DeleteFunc(m, func(_, v string) bool { return v == "" })
	return m
}

// checkTemplates parses every templated field and keeps credentials out of every API
// but create.
func checkTemplates(s *Step, api string) *fieldErr {
	m := templated(s)
	names := slices.Sorted(maps.Keys(m))
	for _, name := range names {
		text := m[name]
		if _, err := parseTemplate(name, text); err != nil {
			return &fieldErr{name, "bad template: " + strings.TrimPrefix(err.Error(), "template: ")}
		}
		if api != CreateAPI && strings.Contains(text, ".Credentials") {
			return &fieldErr{name, "only auth-sessions/create may use .Credentials"}
		}
	}
	return nil
}
