package main

import (
	"errors"
	"flag"
	"regexp"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit codes, so scripts tell a mistake on the command line from a missing object and
// from trouble at the server.
const (
	exitError    = 1 // the server refused or failed, or another error
	exitUsage    = 2 // the command line is wrong: unknown command or flag, missing argument
	exitNotFound = 4 // the Run, session, Job, project or API does not exist
)

// usageError is a mistake on the command line.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// exitCode is the process's exit code for err.
func exitCode(err error) int {
	var u usageError
	switch {
	case errors.As(err, &u), errors.Is(err, flag.ErrHelp), isUsage(err.Error()):
		return exitUsage
	case status.Code(err) == codes.NotFound:
		return exitNotFound
	}
	return exitError
}

// isUsage recognizes the usage errors the subcommands return as plain errors.
func isUsage(msg string) bool {
	for _, p := range []string{"usage: ", "unknown command ", "no command given", "flag provided but not defined", "unexpected arguments"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return strings.HasPrefix(msg, "unknown ") && strings.Contains(msg, " command ") || strings.Contains(msg, " needs a command: ")
}

// grpcWrapping is how grpc-go prints a status: replaced by the code's name.
var grpcWrapping = regexp.MustCompile(`rpc error: code = (\w+) desc = `)

// describe is err as the CLI prints it: a server's refusal as its status code, a word,
// and its message — "NotFound: run run-1 not found" — without grpc-go's
// "rpc error: code = ... desc = ..." wrapping.
func describe(err error) string {
	return grpcWrapping.ReplaceAllString(err.Error(), "$1: ")
}
