// Package services_test holds the rules that keep the four services apart: a service
// may import libs/ and the generated API, never another service; libs/ imports no
// service; only cmd/ and internal/stack wire services together.
package services_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/latchkey/latchkey"

var services = []string{"session-registry", "credential-vault", "browser-runner", "scheduler"}

// deps lists the module-local packages that pattern's packages import, directly or not.
func deps(t *testing.T, pattern string) map[string][]string {
	t.Helper()
	// -deps lists every dependency; the template pairs each package with its imports so a
	// failure can say who imported what.
	cmd := exec.Command("go", "list", "-deps", "-test", "-f", `{{.ImportPath}} {{join .Imports " "}}`, pattern)
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", pattern, err, stderr.String())
	}
	got := make(map[string][]string)
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || !strings.HasPrefix(fields[0], module+"/") {
			continue
		}
		got[fields[0]] = fields[1:]
	}
	return got
}

// offenders returns "importer -> imported" for every import of a forbidden prefix.
func offenders(graph map[string][]string, forbidden func(string) bool) []string {
	var bad []string
	for pkg, imports := range graph {
		for _, imp := range imports {
			if forbidden(imp) {
				bad = append(bad, pkg+" -> "+imp)
			}
		}
	}
	return bad
}

// otherService reports whether an import path belongs to a service other than svc.
func otherService(svc string) func(string) bool {
	own := module + "/services/" + svc
	return func(imp string) bool {
		return strings.HasPrefix(imp, module+"/services/") && imp != own && !strings.HasPrefix(imp, own+"/")
	}
}

func TestServicesDoNotImportEachOther(t *testing.T) {
	for _, svc := range services {
		t.Run(svc, func(t *testing.T) {
			graph := deps(t, "./services/"+svc+"/...")
			if len(graph) == 0 {
				t.Fatalf("go list found no packages for %s", svc)
			}
			bad := offenders(graph, otherService(svc))
			for _, b := range bad {
				t.Errorf("%s imports another service: %s", svc, b)
			}
		})
	}
}

func TestLibsImportNoService(t *testing.T) {
	bad := offenders(deps(t, "./libs/..."), func(imp string) bool {
		return strings.HasPrefix(imp, module+"/services/") || strings.HasPrefix(imp, module+"/cmd/")
	})
	for _, b := range bad {
		t.Errorf("a lib imports a service: %s", b)
	}
}

// TestCheckerCatchesAViolation proves the rule can fail: a graph with a cross-service
// import is reported.
func TestCheckerCatchesAViolation(t *testing.T) {
	graph := map[string][]string{
		module + "/services/scheduler/internal/run": {module + "/services/credential-vault/internal/crypto"},
	}
	bad := offenders(graph, otherService("scheduler"))
	if len(bad) != 1 {
		t.Fatalf("violation not caught: %v", bad)
	}
}
