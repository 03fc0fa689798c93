package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	"github.com/latchkey/latchkey/libs/testkit"
)

// TestTypeScriptClient builds clients/typescript (npm ci, tsc) and runs its example
// under Node: it starts a Run through the generated client over gRPC and prints the
// Run's output, the portal's invoices.
func TestTypeScriptClient(t *testing.T) {
	t.Parallel()
	npm, node := testkit.Tool(t, "npm"), testkit.Tool(t, "node")
	dir := filepath.Join("..", "clients", "typescript")
	for _, args := range [][]string{{"ci", "--no-audit", "--no-fund"}, {"run", "build"}} {
		cmd := exec.CommandContext(t.Context(), npm, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	w := newWorld(t, stacktest.Options{})
	sess := w.readySession(t)
	cmd := exec.CommandContext(t.Context(), node, filepath.Join("dist", "examples", "start-run.js"),
		"http://"+w.st.GRPCAddr(), w.apiKey, sess.GetId(), "list-invoices")
	cmd.Dir = dir
	cmd.Env = os.Environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node start-run.js: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "INV-") {
		t.Fatalf("the TypeScript example printed %s, want the invoices", out)
	}
}
