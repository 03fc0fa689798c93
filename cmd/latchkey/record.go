package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// recordPoll is how often `sessions record -wait` looks at the recording's Run.
const recordPoll = 2 * time.Second

// sessionsRecord prints a one-time recorder URL for a RECORDER session and, with
// -wait, waits until the person's login has been checked and the session is READY.
func sessionsRecord(ctx context.Context, c *cli, sc latchkeyv1.AuthSessionServiceClient, args []string) error {
	fs := c.flags("sessions record ID")
	wait := fs.Bool("wait", false, "wait until the recording ends and say whether the session is READY")
	id, err := oneArgThenFlags(fs, args, "a session id")
	if err != nil {
		return err
	}
	r, err := sc.CreateRecorderUrl(ctx, &latchkeyv1.CreateRecorderUrlRequest{AuthSessionId: id})
	if err != nil {
		return fmt.Errorf("creating a recorder url for session %s: %w", id, err)
	}
	if err := c.emit(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "URL\t%s\n", r.GetRecorderUrl())
		fmt.Fprintf(w, "EXPIRES\t%s\n", r.GetExpireTime().AsTime().Local().Format(time.RFC3339))
		fmt.Fprintf(w, "RUN\t%s\n", r.GetRecordRunId())
		fmt.Fprintln(w, "\t(open the URL once, in the browser of the person who logs in)")
	}); err != nil || !*wait {
		return err
	}
	cc, err := c.dial()
	if err != nil {
		return err
	}
	runs := latchkeyv1.NewRunServiceClient(cc)
	for {
		got, err := runs.GetRun(ctx, &latchkeyv1.GetRunRequest{RunId: r.GetRecordRunId()})
		if err != nil {
			return fmt.Errorf("watching the recording: %w", err)
		}
		switch run := got.GetRun(); run.GetState() {
		case latchkeyv1.RunState_RUN_STATE_SUCCEEDED:
			fmt.Fprintf(c.stderr, "session %s is READY\n", id)
			return nil
		case latchkeyv1.RunState_RUN_STATE_FAILED, latchkeyv1.RunState_RUN_STATE_CANCELED:
			return fmt.Errorf("the recording ended %s: %s", enumName(run.GetState().String()), run.GetFailureMessage())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(recordPoll):
		}
	}
}
