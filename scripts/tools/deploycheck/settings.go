package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Settings is what the manifests may ask of the latchkey binary, read from its source
// so that a renamed or removed setting fails the check instead of being ignored at
// run time.
type Settings struct {
	// Env holds every LATCHKEY_* variable libs/config reads.
	Env map[string]bool
	// Services are the services `latchkey serve` runs (stack.ServiceNames).
	Services []string
}

var settingName = regexp.MustCompile(`^LATCHKEY_[A-Z0-9_]+$`)

// LoadSettings reads the LATCHKEY_* string constants of the package in configDir
// (its non-test files) and the ServiceNames list declared in stackFile.
func LoadSettings(configDir, stackFile string) (Settings, error) {
	s := Settings{Env: map[string]bool{}}
	files, err := filepath.Glob(filepath.Join(configDir, "*.go"))
	if err != nil {
		return s, err
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			return s, fmt.Errorf("reading settings: %w", err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if v, ok := stringLit(n); ok && settingName.MatchString(v) {
				s.Env[v] = true
			}
			return true
		})
	}
	if len(s.Env) == 0 {
		return s, fmt.Errorf("no LATCHKEY_* setting found in %s: is -config the libs/config folder?", configDir)
	}
	src, err := os.ReadFile(stackFile)
	if err != nil {
		return s, fmt.Errorf("reading service names: %w", err)
	}
	f, err := parser.ParseFile(fset, stackFile, src, parser.SkipObjectResolution)
	if err != nil {
		return s, fmt.Errorf("reading service names: %w", err)
	}
	ast.Inspect(f, func(n ast.Node) bool {
		spec, ok := n.(*ast.ValueSpec)
		if !ok || len(spec.Names) != 1 || spec.Names[0].Name != "ServiceNames" || len(spec.Values) != 1 {
			return true
		}
		if lit, ok := spec.Values[0].(*ast.CompositeLit); ok {
			for _, e := range lit.Elts {
				if v, ok := stringLit(e); ok {
					s.Services = append(s.Services, v)
				}
			}
		}
		return false
	})
	if len(s.Services) == 0 {
		return s, fmt.Errorf("no ServiceNames list of strings in %s", stackFile)
	}
	slices.Sort(s.Services)
	return s, nil
}

func stringLit(n ast.Node) (string, bool) {
	lit, ok := n.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	v, err := strconv.Unquote(lit.Value)
	return v, err == nil
}
