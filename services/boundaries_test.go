// Package services_test holds the rules that keep the four services apart: a service
// may import libs/ and the generated API, never another service; libs/ imports no
// service and no example; only cmd/ and internal/stack wire services together; and
// only a service's gRPC layer (internal/api) reads gRPC statuses.
package services_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/latchkey/latchkey"

var services = []string{"session-registry", "credential-vault", "browser-runner", "scheduler"}

// deps lists the module-local packages that pattern's packages import, directly or
// not, with their imports. With -test, a package's test variants are listed under their
// own names ("p [p.test]", "p_test [p.test]", "p.test"; see isTest).
func deps(t *testing.T, pattern string) map[string][]string {
	t.Helper()
	// -deps lists every dependency; the template pairs each package with its imports so a
	// failure can say who imported what. A tab ends the name, which may hold a space.
	cmd := exec.Command("go", "list", "-deps", "-test", "-f", "{{.ImportPath}}\t{{join .Imports \" \"}}", pattern)
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
		name, imports, _ := strings.Cut(sc.Text(), "\t")
		if !strings.HasPrefix(name, module+"/") {
			continue
		}
		for imp := range strings.FieldsSeq(imports) {
			if !strings.HasPrefix(imp, "[") { // the "[p.test]" of a test variant
				got[name] = append(got[name], imp)
			}
		}
		if _, ok := got[name]; !ok {
			got[name] = nil
		}
	}
	return got
}

// isTest reports whether a package name from deps is a test variant or a test main.
func isTest(pkg string) bool {
	return strings.Contains(pkg, " [") || strings.HasSuffix(pkg, "_test") || strings.HasSuffix(pkg, ".test")
}

// product keeps the packages of graph that are built into the product, not its tests.
func product(graph map[string][]string) map[string][]string {
	out := make(map[string][]string)
	for pkg, imports := range graph {
		if !isTest(pkg) {
			out[pkg] = imports
		}
	}
	return out
}

// within keeps the packages of graph that importer accepts.
func within(graph map[string][]string, importer func(string) bool) map[string][]string {
	out := make(map[string][]string)
	for pkg, imports := range graph {
		if importer(pkg) {
			out[pkg] = imports
		}
	}
	return out
}

// offenders returns "importer -> imported" for every forbidden import, sorted.
func offenders(graph map[string][]string, forbidden func(string) bool) []string {
	var bad []string
	for pkg, imports := range graph {
		for _, imp := range imports {
			if forbidden(imp) {
				bad = append(bad, pkg+" -> "+imp)
			}
		}
	}
	slices.Sort(bad)
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

// libImportsAnExample is rule (a): code in libs/ that ships imports nothing from
// examples/. The examples show how to use Latchkey; a lib that needed one would make
// the demo portal part of every binary. Tests of a lib may use the demo portal as a
// fixture, through examples/portal/portaltest.
func libImportsAnExample(graph map[string][]string) []string {
	libs := within(product(graph), func(pkg string) bool { return strings.HasPrefix(pkg, module+"/libs/") })
	return offenders(libs, func(imp string) bool { return strings.HasPrefix(imp, module+"/examples/") })
}

// grpcStatusImport is the package through which code reads a gRPC status.
const grpcStatusImport = "google.golang.org/grpc/status"

// internalOutsideAPI reports whether pkg is one of a service's internal packages
// other than its gRPC layer (internal/api and below).
func internalOutsideAPI(pkg string) bool {
	rest, ok := strings.CutPrefix(pkg, module+"/services/")
	if !ok {
		return false
	}
	_, rest, _ = strings.Cut(rest, "/") // the service's name
	inner, ok := strings.CutPrefix(rest, "internal/")
	return ok && inner != "api" && !strings.HasPrefix(inner, "api/")
}

// statusOutsideAPI is rule (b): under services/*/internal, only the gRPC layer
// (internal/api) imports google.golang.org/grpc/status. Everything else works with Go
// errors (the service's sentinels); a status, its own or one a sibling service sent,
// is made and read in one place per service (STYLE.md rule 9).
func statusOutsideAPI(graph map[string][]string) []string {
	inner := within(product(graph), internalOutsideAPI)
	return offenders(inner, func(imp string) bool { return imp == grpcStatusImport })
}

func TestLibsImportNoExample(t *testing.T) {
	for _, b := range libImportsAnExample(deps(t, "./libs/...")) {
		t.Errorf("a lib imports an example: %s", b)
	}
}

func TestOnlyTheGRPCLayerReadsStatuses(t *testing.T) {
	for _, b := range statusOutsideAPI(deps(t, "./services/...")) {
		t.Errorf("only internal/api may import %s: %s", grpcStatusImport, b)
	}
}

// pkg names a package of the module, for synthetic graphs.
func pkg(path string) string { return module + "/" + path }

// testVariant names path compiled for its own tests, as go list -test does.
func testVariant(path string) string { return pkg(path) + " [" + pkg(path) + ".test]" }

// TestLibExampleRuleCatchesAViolation proves rule (a) can fail, and spares tests and
// the examples themselves.
func TestLibExampleRuleCatchesAViolation(t *testing.T) {
	graph := map[string][]string{
		pkg("libs/testkit"):               {pkg("examples/portal"), "testing"},
		testVariant("libs/runner"):        {pkg("examples/portal/portaltest")},
		pkg("examples/portal/portaltest"): {pkg("examples/portal")},
	}
	want := []string{pkg("libs/testkit") + " -> " + pkg("examples/portal")}
	if got := libImportsAnExample(graph); !slices.Equal(got, want) {
		t.Errorf("rule (a) found %v, want %v", got, want)
	}
}

// TestStatusRuleCatchesAViolation proves rule (b) can fail, and spares the gRPC layer,
// a service's root package, libs and tests.
func TestStatusRuleCatchesAViolation(t *testing.T) {
	graph := map[string][]string{
		pkg("services/scheduler/internal/orch"):          {grpcStatusImport, "google.golang.org/grpc/codes"},
		pkg("services/scheduler/internal/apiclient"):     {grpcStatusImport},
		pkg("services/scheduler/internal/api"):           {grpcStatusImport},
		pkg("services/scheduler/internal/api/errmap"):    {grpcStatusImport},
		pkg("services/scheduler"):                        {grpcStatusImport},
		testVariant("services/scheduler/internal/store"): {grpcStatusImport},
		pkg("libs/server"):                               {grpcStatusImport},
	}
	want := []string{
		pkg("services/scheduler/internal/apiclient") + " -> " + grpcStatusImport,
		pkg("services/scheduler/internal/orch") + " -> " + grpcStatusImport,
	}
	if got := statusOutsideAPI(graph); !slices.Equal(got, want) {
		t.Errorf("rule (b) found %v, want %v", got, want)
	}
}
