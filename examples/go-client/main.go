// Command go-client starts a Run through Latchkey's Go client, waits for it to end and
// prints its output as JSON: what an internal Go system does, outside this repository's
// module (see its go.mod).
//
//	go run . -addr 127.0.0.1:7400 -api-key "$(cat ~/.latchkey/dev-api-key)" -session alice list-invoices
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/latchkey/latchkey/libs/client"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:7400", "Latchkey's gRPC address")
	key := flag.String("api-key", os.Getenv("LATCHKEY_API_KEY"), "the project's API key ($LATCHKEY_API_KEY)")
	session := flag.String("session", "", "the AuthSession to run in")
	flag.Parse()
	if flag.NArg() != 1 || *key == "" {
		fmt.Fprintln(os.Stderr, "usage: go-client -api-key KEY [-addr HOST:PORT] [-session ID] API")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *addr, *key, *session, flag.Arg(0)); err != nil {
		fmt.Fprintln(os.Stderr, "go-client:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr, key, session, api string) error {
	c, err := client.Dial(addr, client.Options{APIKey: key})
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Run(ctx, &latchkeyv1.StartRunRequest{Api: api, AuthSessionId: session})
	switch {
	case errors.Is(err, client.ErrAuthSessionExpired):
		return fmt.Errorf("session %s is expired: a person must log in again (%w)", session, err)
	case err != nil:
		return err
	case r.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED:
		return fmt.Errorf("run %s ended %s: %s", r.GetId(), r.GetState(), r.GetFailureMessage())
	}
	out, err := protojson.Marshal(r.GetOutput())
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}
