package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompletionKnowsEveryCommand: the completion's command tree holds every command
// the CLI runs, and each group's subcommands are the ones its usage text documents.
func TestCompletionKnowsEveryCommand(t *testing.T) {
	t.Parallel()
	for name := range clientCommands() {
		if _, ok := commandTree[name]; !ok {
			t.Errorf("completion lacks the client command %q", name)
		}
	}
	usages := map[string]string{"projects": projectsUsage, "sessions": sessionsUsage, "automations": automationsUsage,
		"runs": runsUsage, "jobs": jobsUsage, "vault": vaultUsage}
	for group, text := range usages {
		for _, sub := range commandTree[group] {
			if !strings.Contains(text, "\n  "+sub+" ") && !strings.Contains(text, "| "+sub+" ") {
				t.Errorf("completion offers %s %s, which its usage does not document", group, sub)
			}
		}
	}
}

// TestCompletionInBash sources `latchkey completion bash` in a real bash and asks it
// what it completes, global flags before the command included.
func TestCompletionInBash(t *testing.T) {
	t.Parallel()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash is not installed")
	}
	var script bytes.Buffer
	if err := runCompletion([]string{"bash"}, &script); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "latchkey.bash")
	if err := os.WriteFile(file, script.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	for line, want := range map[string]string{
		"latchkey ru":                "runs",
		"latchkey -o json runs tr":   "trace",
		"latchkey sessions update-":  "update-credentials",
		"latchkey jobs list -o ":     "table json",
		"latchkey runs list -api-":   "-api-key",
		"latchkey -addr x:1 vault r": "rotate rewrap",
	} {
		words := strings.Fields(line)
		if strings.HasSuffix(line, " ") {
			words = append(words, "")
		}
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		cmd := exec.Command(bash, "--norc", "-c", `source "$1"; COMP_WORDS=(`+strings.Join(quoted, " ")+`); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _latchkey; echo "${COMPREPLY[*]}"`, "bash", file)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("%q completes to %q, want %q", line, got, want)
		}
	}
	var zsh bytes.Buffer
	if err := runCompletion([]string{"zsh"}, &zsh); err != nil || !strings.Contains(zsh.String(), "bashcompinit") {
		t.Errorf("zsh completion: %v", err)
	}
	if err := runCompletion([]string{"fish"}, &zsh); err == nil || exitCode(err) != exitUsage {
		t.Errorf("fish: %v, want a usage error", err)
	}
}
