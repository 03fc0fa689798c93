package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/latchkey/latchkey/internal/stack"
)

// commandTree is every command and its subcommands, for shell completion.
// TestCompletionKnowsEveryCommand keeps it in step with the usage texts.
var commandTree = map[string][]string{
	"dev":         nil,
	"serve":       stack.ServiceNames,
	"try":         nil,
	"version":     nil,
	"help":        nil,
	"completion":  {"bash", "zsh"},
	"projects":    {"create", "list", "delete", "keys"},
	"sessions":    {"create", "get", "list", "update", "update-credentials", "delete", "import", "export", "record"},
	"automations": {"deploy", "list", "bundles", "sites"},
	"runs":        {"start", "get", "list", "watch", "cancel", "resume", "trace"},
	"jobs":        {"create", "get", "list", "update", "delete", "pause", "resume", "trigger", "runs"},
	"audit":       nil,
	"vault":       {"status", "rotate", "rewrap", "min-version"},
}

// completionBash completes commands, subcommands and the global flags; after a flag
// that takes a file (-ca, -cert, -key, -credentials-file, ...) it completes file names.
const completionBash = `# latchkey completion for bash: source <(latchkey completion bash)
_latchkey() {
  local cur prev words cword
  cur="${COMP_WORDS[COMP_CWORD]}"
  prev="${COMP_WORDS[COMP_CWORD-1]}"
  case "$prev" in
    -ca|-cert|-key|-credentials-file|-payloads-file|-proxy-password-file|-out|--bundle|--credentials|--state|--save-state)
      COMPREPLY=($(compgen -f -- "$cur")); return ;;
    -o) COMPREPLY=($(compgen -W "table json" -- "$cur")); return ;;
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "%s" -- "$cur")); return
  fi
  local cmd="" sub="" i
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "${COMP_WORDS[i]}" in
      -o|-addr|-api-key|-ca|-cert|-key) ((i++)) ;;
      -*) ;;
      *) if [[ -z "$cmd" ]]; then cmd="${COMP_WORDS[i]}"; elif [[ -z "$sub" ]]; then sub="${COMP_WORDS[i]}"; fi ;;
    esac
  done
  if [[ -z "$cmd" ]]; then
    COMPREPLY=($(compgen -W "%s" -- "$cur")); return
  fi
  if [[ -z "$sub" ]]; then
    case "$cmd" in
%s    esac
  fi
}
complete -o default -F _latchkey latchkey
`

// completionZsh loads the bash completion through zsh's bashcompinit.
const completionZsh = `# latchkey completion for zsh: source <(latchkey completion zsh)
autoload -U +X bashcompinit && bashcompinit
`

// runCompletion prints the completion script for shell.
func runCompletion(args []string, stdout io.Writer) error {
	if len(args) != 1 || (args[0] != "bash" && args[0] != "zsh") {
		return errors.New("usage: latchkey completion bash|zsh  (then: source <(latchkey completion bash))")
	}
	cmds := make([]string, 0, len(commandTree))
	for c := range commandTree {
		cmds = append(cmds, c)
	}
	slices.Sort(cmds)
	var cases strings.Builder
	for _, c := range cmds {
		if subs := commandTree[c]; len(subs) > 0 {
			fmt.Fprintf(&cases, "      %s) COMPREPLY=($(compgen -W %q -- \"$cur\")) ;;\n", c, strings.Join(subs, " "))
		}
	}
	var flags []string
	for f := range globalFlags {
		flags = append(flags, "-"+f)
	}
	slices.Sort(flags)
	script := fmt.Sprintf(completionBash, strings.Join(flags, " "), strings.Join(cmds, " "), cases.String())
	if args[0] == "zsh" {
		script = completionZsh + script
	}
	_, err := io.WriteString(stdout, script)
	return err
}
