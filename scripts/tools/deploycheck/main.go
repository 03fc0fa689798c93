// Command deploycheck validates the Kubernetes manifests in deploy/ offline, so
// `make lint` catches a broken deployment on a machine with no cluster. For each
// kustomization it is given it:
//
//   - builds it in memory with kustomize's krusty (the library behind `kubectl
//     apply -k`), a file X.example standing in for a missing X (the secrets.env
//     that is never committed);
//   - decodes every object strictly into its k8s.io/api type: an unknown field, a
//     duplicate field, a malformed quantity or an unknown kind is an error;
//   - applies the rules a user of these manifests relies on (rules.go): probes and
//     resource requests on every container, a PodDisruptionBudget and anti-affinity
//     for every workload with replicas, LATCHKEY_* variables that libs/config
//     reads, addresses that name Services of the build, and more.
//
// Usage, from the repository root:
//
//	go run ./scripts/tools/deploycheck deploy/kubernetes/overlays/example
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "deploycheck:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("deploycheck", flag.ContinueOnError)
	root := fs.String("root", "deploy", "folder loaded into memory: every kustomization and file the builds use")
	configDir := fs.String("config", "libs/config", "package whose LATCHKEY_* names are the settings")
	stackFile := fs.String("stack", "internal/stack/stack.go", "file declaring ServiceNames, what `latchkey serve` runs")
	printYAML := fs.Bool("print", false, "print each build as YAML (what `kubectl apply -k` would send)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("usage: deploycheck [-root DIR] KUSTOMIZATION_DIR...")
	}
	settings, err := LoadSettings(*configDir, *stackFile)
	if err != nil {
		return err
	}
	mem, err := LoadTree(*root)
	if err != nil {
		return err
	}
	for _, dir := range fs.Args() {
		if rel, err := filepath.Rel(*root, dir); err != nil || !filepath.IsLocal(rel) {
			return fmt.Errorf("%s is not under -root %s, which holds everything a build may read", dir, *root)
		}
		rep, err := Check(mem, dir, settings)
		if *printYAML {
			stdout.Write(rep.YAML)
		}
		if err != nil {
			return fmt.Errorf("%s:\n%w", dir, err)
		}
		fmt.Fprintf(stdout, "%s: valid, %s\n", dir, rep)
	}
	return nil
}
