package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

const runsUsage = `usage: latchkey runs COMMAND

  start API [-session ID] [-params JSON] [-wait] [-no-recreate] [-check-attempts N]
            [-create-attempts N] [-retries N] [-timeout D] [-idempotency-key K] [-site S]
                                start a Run; -wait follows it with a live progress line;
                                -site names the bundle of a Run without a session
  get ID                        show one Run
  list [-session ID] [-api A] [-state S] [-job-run ID]   list Runs, newest first
  watch ID                      follow a Run until it ends
  cancel ID                     cancel a Run
  resume ID FIELD=VALUE...      answer a Run that asked for more information
  trace ID [-jaeger URL]        the Run's trace as a waterfall: from Jaeger (-jaeger or
                                $LATCHKEY_JAEGER_URL), else from the Run's own records
`

// runsCommand runs `latchkey runs ...`.
func runsCommand(ctx context.Context, c *cli, args []string) error {
	type r = sub[latchkeyv1.RunServiceClient]
	return dispatch(ctx, c, args, "runs", runsUsage, latchkeyv1.NewRunServiceClient,
		r{"start", runsStart}, r{"get", runsGet}, r{"list", runsList}, r{"watch", runsWatch}, r{"cancel", runsCancel}, r{"resume", runsResume}, r{"trace", runsTrace})
}

func runsStart(ctx context.Context, c *cli, rc latchkeyv1.RunServiceClient, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return errors.New("runs start needs the API name first, e.g. latchkey runs start list-invoices -session ID")
	}
	api := args[0]
	fs := flag.NewFlagSet("runs start", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	session := fs.String("session", "", "AuthSession id")
	site := fs.String("site", "", "for a Run without a session: the site whose bundle has the API (default: default)")
	params := fs.String("params", "{}", "params as a JSON object")
	wait := fs.Bool("wait", false, "follow the Run until it ends")
	noRecreate := fs.Bool("no-recreate", false, "cancel instead of logging in again when the check fails")
	checkAttempts := fs.Int("check-attempts", 0, "check attempts (default 1)")
	createAttempts := fs.Int("create-attempts", 0, "login attempts when recreating (default 1)")
	retries := fs.Int("retries", 0, "retries of the API after a transient failure")
	timeout := fs.Duration("timeout", 0, "deadline of the whole Run (default 5m)")
	idem := fs.String("idempotency-key", "", "the same key returns the same Run")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	p := &structpb.Struct{}
	if err := protojson.Unmarshal([]byte(*params), p); err != nil {
		return fmt.Errorf("-params must be a JSON object: %w", err)
	}
	opts := &latchkeyv1.RunOptions{Retries: int32(*retries)}
	if *noRecreate {
		f := false
		opts.AutoRecreate = &f
	}
	if *checkAttempts > 0 {
		n := int32(*checkAttempts)
		opts.CheckAttempts = &n
	}
	if *createAttempts > 0 {
		n := int32(*createAttempts)
		opts.CreateAttempts = &n
	}
	if *timeout > 0 {
		opts.Timeout = durationpb.New(*timeout)
	}
	resp, err := rc.StartRun(ctx, &latchkeyv1.StartRunRequest{Api: api, AuthSessionId: *session, Site: *site, Params: p, Options: opts, IdempotencyKey: *idem})
	if err != nil {
		return err
	}
	if !*wait {
		return c.printRun(resp.GetRun())
	}
	return c.follow(ctx, rc, resp.GetRun().GetId())
}

func runsGet(ctx context.Context, c *cli, rc latchkeyv1.RunServiceClient, args []string) error {
	if len(args) != 1 {
		return errors.New("usage: latchkey runs get ID")
	}
	resp, err := rc.GetRun(ctx, &latchkeyv1.GetRunRequest{RunId: args[0]})
	if err != nil {
		return err
	}
	return c.printRun(resp.GetRun())
}

func runsList(ctx context.Context, c *cli, rc latchkeyv1.RunServiceClient, args []string) error {
	fs := flag.NewFlagSet("runs list", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	session := fs.String("session", "", "only Runs of this AuthSession")
	api := fs.String("api", "", "only Runs of this API")
	jobRun := fs.String("job-run", "", "only Runs of this JobRun (a firing of a Job)")
	state := fs.String("state", "", "only Runs in this state (queued, running, succeeded, failed, canceled)")
	limit := fs.Int("limit", 50, "at most this many")
	if err := fs.Parse(args); err != nil {
		return err
	}
	req := &latchkeyv1.ListRunsRequest{AuthSessionId: *session, Api: *api, JobRunId: *jobRun, PageSize: int32(*limit)}
	if *state != "" {
		v, ok := latchkeyv1.RunState_value["RUN_STATE_"+strings.ToUpper(*state)]
		if !ok {
			return fmt.Errorf("unknown state %q", *state)
		}
		req.States = []latchkeyv1.RunState{latchkeyv1.RunState(v)}
	}
	resp, err := rc.ListRuns(ctx, req)
	if err != nil {
		return err
	}
	if c.output == "json" {
		return c.printJSON(resp)
	}
	tw := c.table()
	fmt.Fprintln(tw, "ID\tKIND\tAPI\tSTATE\tREASON\tSESSION\tCREATED")
	for _, r := range resp.GetRuns() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.GetId(), short(r.GetKind().String(), "RUN_KIND_"), r.GetApi(),
			short(r.GetState().String(), "RUN_STATE_"), reasonOf(r), r.GetAuthSessionId(), r.GetCreateTime().AsTime().Local().Format(time.DateTime))
	}
	return tw.Flush()
}

func runsWatch(ctx context.Context, c *cli, rc latchkeyv1.RunServiceClient, args []string) error {
	if len(args) != 1 {
		return errors.New("usage: latchkey runs watch ID")
	}
	return c.follow(ctx, rc, args[0])
}

func runsCancel(ctx context.Context, c *cli, rc latchkeyv1.RunServiceClient, args []string) error {
	if len(args) != 1 {
		return errors.New("usage: latchkey runs cancel ID")
	}
	resp, err := rc.CancelRun(ctx, &latchkeyv1.CancelRunRequest{RunId: args[0]})
	if err != nil {
		return err
	}
	return c.printRun(resp.GetRun())
}

func runsResume(ctx context.Context, c *cli, rc latchkeyv1.RunServiceClient, args []string) error {
	if len(args) < 2 {
		return errors.New("usage: latchkey runs resume ID FIELD=VALUE...")
	}
	answers := map[string]string{}
	for _, a := range args[1:] {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return fmt.Errorf("answer %q is not FIELD=VALUE", a)
		}
		answers[k] = v
	}
	resp, err := rc.ResumeRun(ctx, &latchkeyv1.ResumeRunRequest{RunId: args[0], Answers: answers})
	if err != nil {
		return err
	}
	return c.printRun(resp.GetRun())
}

// follow streams a Run's changes: a live progress line on a table, one JSON object per
// change with -o json, and the final Run at the end.
func (c *cli) follow(ctx context.Context, rc latchkeyv1.RunServiceClient, id string) error {
	stream, err := rc.WatchRun(ctx, &latchkeyv1.WatchRunRequest{RunId: id})
	if err != nil {
		return err
	}
	began := time.Now()
	var last *latchkeyv1.Run
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		last = m.GetRun()
		if c.output == "json" {
			if err := c.printJSON(m); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(c.stderr, "\r\033[K%s  %-10s %-20s %5.1fs", id, short(last.GetState().String(), "RUN_STATE_"), m.GetEvent(), time.Since(began).Seconds())
	}
	if c.output != "json" {
		fmt.Fprintln(c.stderr)
	}
	if last == nil {
		return fmt.Errorf("run %s: no state received", id)
	}
	if err := c.printRun(last); err != nil {
		return err
	}
	if last.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		return fmt.Errorf("run %s ended %s", id, short(last.GetState().String(), "RUN_STATE_"))
	}
	return nil
}

// printRun shows one Run: a short summary and its output as JSON, or the whole Run.
func (c *cli) printRun(r *latchkeyv1.Run) error {
	if c.output == "json" {
		return c.printJSON(r)
	}
	tw := c.table()
	fmt.Fprintf(tw, "run\t%s\n", r.GetId())
	fmt.Fprintf(tw, "kind\t%s\n", short(r.GetKind().String(), "RUN_KIND_"))
	fmt.Fprintf(tw, "api\t%s\n", r.GetApi())
	if r.GetSite() != "" {
		fmt.Fprintf(tw, "site\t%s (bundle version %d)\n", r.GetSite(), r.GetBundleVersion())
	}
	fmt.Fprintf(tw, "state\t%s\n", short(r.GetState().String(), "RUN_STATE_"))
	if reason := reasonOf(r); reason != "" {
		fmt.Fprintf(tw, "reason\t%s: %s\n", reason, r.GetFailureMessage())
	}
	if r.GetAuthSessionId() != "" {
		fmt.Fprintf(tw, "session\t%s\n", r.GetAuthSessionId())
	}
	if len(r.GetChildRunIds()) > 0 {
		fmt.Fprintf(tw, "children\t%s\n", strings.Join(r.GetChildRunIds(), ", "))
	}
	if mi := r.GetMoreInfo(); mi != nil {
		fmt.Fprintf(tw, "asks\t%s: %s (answer: latchkey runs resume %s %s=...)\n", mi.GetField(), mi.GetPrompt(), r.GetId(), mi.GetField())
	}
	if r.GetTraceId() != "" {
		fmt.Fprintf(tw, "trace\t%s\n", r.GetTraceId())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.GetOutput() != nil {
		b, err := protojson.Marshal(r.GetOutput())
		if err != nil {
			return err
		}
		var v any
		_ = json.Unmarshal(b, &v)
		out, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintf(c.stdout, "output:\n%s\n", out)
	}
	return nil
}

func reasonOf(r *latchkeyv1.Run) string {
	if r.GetFailureReason() == latchkeyv1.FailureReason_FAILURE_REASON_UNSPECIFIED {
		return ""
	}
	return strings.TrimPrefix(r.GetFailureReason().String(), "FAILURE_REASON_")
}
