package main

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
)

// sub is one subcommand of a client command group: its name and what it runs with
// the group's gRPC client.
type sub[C any] struct {
	name string
	run  func(context.Context, *cli, C, []string) error
}

// dispatch runs `latchkey GROUP SUB ...`: usage for no or a help argument, an error
// naming the group's subcommands for an unknown one, else SUB with a client made by
// newClient on the dialled connection.
func dispatch[C any](ctx context.Context, c *cli, args []string, group, usage string, newClient func(grpc.ClientConnInterface) C, subs ...sub[C]) error {
	names := make([]string, len(subs))
	for i, s := range subs {
		names[i] = s.name
	}
	if len(args) == 0 || isHelp(args[0]) {
		return usageOr(c, usage, args, group+" needs a command: "+strings.Join(names[:len(names)-1], ", ")+" or "+names[len(names)-1])
	}
	for _, s := range subs {
		if s.name != args[0] {
			continue
		}
		cc, err := c.dial()
		if err != nil {
			return err
		}
		return s.run(ctx, c, newClient(cc), args[1:])
	}
	fmt.Fprint(c.stderr, usage)
	return fmt.Errorf("unknown %s command %q", group, args[0])
}
