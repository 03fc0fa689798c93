//go:build chaos

package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bins are the binaries TestMain built: latchkey, portal and nats-server.
var bins struct{ latchkey, portal, nats string }

// TestMain builds the binaries the suite starts, once for the whole test binary: the
// latchkey binary and the demo portal from this tree, and nats-server through the
// tools module at the version it pins (the one go.mod embeds). Go's build cache makes
// a rebuild of an unchanged tree take seconds.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "latchkey-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	code := 1
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "chaos: building the binaries:", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func build(dir string) error {
	start := time.Now()
	root, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	steps := []struct{ dir, out, pkg string }{
		{root, filepath.Join(dir, "latchkey"), "./cmd/latchkey"},
		{root, filepath.Join(dir, "portal"), "./examples/portal/cmd/portal"},
		{filepath.Join(root, "scripts", "tools"), filepath.Join(dir, "nats-server"), "github.com/nats-io/nats-server/v2"},
	}
	for _, s := range steps {
		cmd := exec.Command("go", "build", "-o", s.out, s.pkg)
		cmd.Dir = s.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", s.pkg, err, out)
		}
	}
	bins.latchkey, bins.portal, bins.nats = steps[0].out, steps[1].out, steps[2].out
	out, err := exec.Command(bins.nats, "--version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("nats-server --version: %w", err)
	}
	fmt.Printf("chaos: built latchkey, portal and %s in %s\n", strings.TrimSpace(string(out)), time.Since(start).Round(100*time.Millisecond))
	return nil
}
