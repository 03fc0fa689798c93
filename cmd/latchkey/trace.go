package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/telemetry"
)

// runsTrace prints a Run's trace as a terminal waterfall: from Jaeger's query API when
// one is configured (-jaeger or LATCHKEY_JAEGER_URL), else from the Run's own records
// (its queue wait and its validate and create Runs' times).
func runsTrace(ctx context.Context, c *cli, rc latchkeyv1.RunServiceClient, args []string) error {
	fs := c.flags("runs trace")
	jaeger := fs.String("jaeger", envOr(c.env, "LATCHKEY_JAEGER_URL", ""), "Jaeger query address, e.g. http://127.0.0.1:16686 (default $LATCHKEY_JAEGER_URL)")
	id, err := oneArgThenFlags(fs, args, "a Run id: latchkey runs trace RUN_ID")
	if err != nil {
		return err
	}
	resp, err := rc.GetRun(ctx, &latchkeyv1.GetRunRequest{RunId: id})
	if err != nil {
		return err
	}
	run := resp.GetRun()
	if *jaeger != "" && run.GetTraceId() != "" {
		spans, err := telemetry.FetchTrace(ctx, *jaeger, run.GetTraceId())
		if err != nil {
			if errors.Is(err, telemetry.ErrTraceNotFound) {
				return fmt.Errorf("trace %s of run %s is not in Jaeger at %s (yet: spans arrive a few seconds after they end)", run.GetTraceId(), id, *jaeger)
			}
			return err
		}
		fmt.Fprintf(c.stdout, "run %s  trace %s  %d spans  from Jaeger (%s/trace/%s)\n", id, run.GetTraceId(), len(spans), strings.TrimSuffix(*jaeger, "/"), run.GetTraceId())
		depths := telemetry.Depths(spans)
		rows := make([]waterfallRow, len(spans))
		for i, s := range spans {
			rows[i] = waterfallRow{service: strings.TrimPrefix(s.Service, "latchkey-"), name: s.Name, depth: depths[i], start: s.Start, dur: s.Duration}
		}
		return writeWaterfall(c.stdout, rows)
	}
	rows := []waterfallRow{recordRow(run, 0)}
	if q := run.GetStartTime(); q != nil {
		rows = append(rows, waterfallRow{service: "scheduler", name: "queued", depth: 1, start: run.GetCreateTime().AsTime(), dur: q.AsTime().Sub(run.GetCreateTime().AsTime())})
	}
	for _, cid := range run.GetChildRunIds() {
		cr, err := rc.GetRun(ctx, &latchkeyv1.GetRunRequest{RunId: cid})
		if err != nil {
			return fmt.Errorf("child run %s: %w", cid, err)
		}
		rows = append(rows, recordRow(cr.GetRun(), 1))
	}
	if bt := run.GetBrowserTime(); bt != nil && run.GetEndTime() != nil {
		d := bt.AsDuration()
		rows = append(rows, waterfallRow{service: "browser-runner", name: "browser (last API task)", depth: 1, start: run.GetEndTime().AsTime().Add(-d), dur: d})
	}
	how := "no Jaeger configured (-jaeger or LATCHKEY_JAEGER_URL)"
	if *jaeger != "" {
		how = "the Run has no trace id"
	}
	fmt.Fprintf(c.stdout, "run %s  trace %s  from the Run's records: %s\n", id, run.GetTraceId(), how)
	return writeWaterfall(c.stdout, rows)
}

// recordRow is a Run as one waterfall row, from queueing (or its start) to its end (or now).
func recordRow(r *latchkeyv1.Run, depth int) waterfallRow {
	start := r.GetCreateTime().AsTime()
	end := time.Now()
	if r.GetEndTime() != nil {
		end = r.GetEndTime().AsTime()
	}
	name := fmt.Sprintf("%s %s (%s)", strings.TrimPrefix(short(r.GetKind().String(), "RUN_KIND_"), "authsession_"), r.GetApi(), short(r.GetState().String(), "RUN_STATE_"))
	return waterfallRow{service: "scheduler", name: name, depth: depth, start: start, dur: end.Sub(start)}
}

type waterfallRow struct {
	service, name string
	depth         int
	start         time.Time
	dur           time.Duration
}

const waterfallWidth = 40

// writeWaterfall prints rows as SERVICE, SPAN (indented by depth), start offset,
// duration and a bar on a common time scale.
func writeWaterfall(w io.Writer, rows []waterfallRow) error {
	if len(rows) == 0 {
		return nil
	}
	t0, t1 := rows[0].start, rows[0].start.Add(rows[0].dur)
	nameW, svcW := len("SPAN"), len("SERVICE")
	for _, r := range rows {
		if r.start.Before(t0) {
			t0 = r.start
		}
		if e := r.start.Add(r.dur); e.After(t1) {
			t1 = e
		}
		nameW = max(nameW, 2*r.depth+len(r.name))
		svcW = max(svcW, len(r.service))
	}
	total := max(t1.Sub(t0), time.Microsecond)
	fmt.Fprintf(w, "%-*s  %-*s  %9s  %9s  %s\n", svcW, "SERVICE", nameW, "SPAN", "START", "DURATION", "0 .. "+fmtDur(total))
	for _, r := range rows {
		off := r.start.Sub(t0)
		from := int(float64(off) / float64(total) * waterfallWidth)
		n := max(1, int(float64(r.dur)/float64(total)*waterfallWidth+0.5))
		from = min(from, waterfallWidth-1)
		n = min(n, waterfallWidth-from)
		bar := strings.Repeat(" ", from) + strings.Repeat("█", n) + strings.Repeat(" ", waterfallWidth-from-n)
		fmt.Fprintf(w, "%-*s  %-*s  %9s  %9s  |%s|\n", svcW, r.service, nameW, strings.Repeat("  ", r.depth)+r.name, "+"+fmtDur(off), fmtDur(r.dur), bar)
	}
	return nil
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}
