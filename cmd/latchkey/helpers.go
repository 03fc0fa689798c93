package main

// The helpers the command files share: reading a subcommand's arguments and input,
// and printing its results (as a table, or as JSON with -o json). The client itself,
// with printJSON and table, is in client.go.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// flags returns a flag set for a subcommand that reports errors on stderr.
func (c *cli) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("latchkey "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	return fs
}

// oneArgThenFlags takes one positional argument (before or after the flags).
func oneArgThenFlags(fs *flag.FlagSet, args []string, what string) (string, error) {
	rest, err := argsThenFlags(fs, args)
	if err != nil {
		return "", err
	}
	if len(rest) != 1 {
		return "", fmt.Errorf("%s needs %s", fs.Name(), what)
	}
	return rest[0], nil
}

// argsThenFlags parses flags that may follow the positional arguments.
func argsThenFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		pos, args = append(pos, args[0]), args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return append(pos, fs.Args()...), nil
}

// readInput reads a file, or standard input for "-".
func readInput(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}

// isHelp reports whether s asks for help.
func isHelp(s string) bool { return slices.Contains([]string{"-h", "--help", "help"}, s) }

// usageOr prints usage; it is an error when no command was given.
func usageOr(c *cli, usage string, args []string, missing string) error {
	fmt.Fprint(c.stdout, usage)
	if len(args) == 0 {
		return errors.New(missing)
	}
	return nil
}

// emit prints m as JSON with -o json, else as a table.
func (c *cli) emit(m proto.Message, table func(w *tabwriter.Writer)) error {
	if c.output == "json" {
		return c.printJSON(m)
	}
	w := c.table()
	table(w)
	return w.Flush()
}

// emitLine prints m as JSON with -o json, else line.
func (c *cli) emitLine(m proto.Message, line string) error {
	return c.emit(m, func(w *tabwriter.Writer) { fmt.Fprintln(w, line) })
}

// when formats a timestamp for a table, "-" when unset.
func when(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().Local().Format("2006-01-02 15:04:05")
}

// enumName turns SESSION_STATE_READY into READY.
func enumName(s string) string {
	for _, p := range []string{"SESSION_STATE_", "SESSION_TYPE_", "FAILURE_REASON_"} {
		s = strings.TrimPrefix(s, p)
	}
	return s
}

// short turns an enum name into its lowercase tail: short("RUN_STATE_QUEUED", "RUN_STATE_") is "queued".
func short(s, prefix string) string { return strings.ToLower(strings.TrimPrefix(s, prefix)) }
