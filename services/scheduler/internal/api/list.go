package api

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/domain"
	"github.com/latchkey/latchkey/libs/errs"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// ListRuns lists Runs newest first. The page token is the last Run id of the previous
// page; ids sort by creation time.
func (r *Runs) ListRuns(ctx context.Context, req *latchkeyv1.ListRunsRequest) (*latchkeyv1.ListRunsResponse, error) {
	o, proj, err := r.caller(ctx)
	if err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	ids, err := o.Store.Keys(ctx, proj)
	if err != nil {
		return nil, fmt.Errorf("listing runs: %w", err)
	}
	runs, info := page(ids, req.GetPageToken(), newestFirst, size, func(id string) (*latchkeyv1.Run, bool) {
		rec, _, err := o.Store.Get(ctx, proj, id)
		return rec.GetRun(), err == nil && matches(rec.GetRun(), req)
	})
	return &latchkeyv1.ListRunsResponse{Runs: runs, PageInfo: info}, nil
}

func matches(run *latchkeyv1.Run, req *latchkeyv1.ListRunsRequest) bool {
	switch {
	case req.GetAuthSessionId() != "" && run.GetAuthSessionId() != req.GetAuthSessionId():
		return false
	case req.GetApi() != "" && run.GetApi() != req.GetApi():
		return false
	case req.GetJobRunId() != "" && run.GetJobRunId() != req.GetJobRunId():
		return false
	case len(req.GetStates()) > 0 && !slices.Contains(req.GetStates(), run.GetState()):
		return false
	case len(req.GetKinds()) > 0 && !slices.Contains(req.GetKinds(), run.GetKind()):
		return false
	}
	return true
}

// WatchRun streams the Run's changes until it ends: first its current state, then one
// message per event on lk.events.run.<project>.<run>. Events travel on core NATS to
// the watcher, so it also re-reads the record every watchPoll: a watch never hangs
// on an event it missed.
func (r *Runs) WatchRun(req *latchkeyv1.WatchRunRequest, stream latchkeyv1.RunService_WatchRunServer) error {
	ctx := stream.Context()
	rec, err := r.get(ctx, req.GetRunId())
	if err != nil {
		return err
	}
	subj, err := bus.RunEventSubject(rec.GetRun().GetProjectId(), rec.GetRun().GetId())
	if err != nil {
		return errs.New(errs.ErrInvalid, "run_id: %v", err)
	}
	// Subscribe before reading the state again, so no change falls in between.
	ch := make(chan *nats.Msg, 64)
	sub, err := r.NC.ChanSubscribe(subj, ch)
	if err != nil {
		return fmt.Errorf("subscribing to run events: %w", err)
	}
	defer sub.Unsubscribe()
	if rec, err = r.get(ctx, req.GetRunId()); err != nil {
		return err
	}
	if err := stream.Send(&latchkeyv1.WatchRunResponse{Run: rec.GetRun(), Event: "current", Time: timestamppb.Now()}); err != nil {
		return err
	}
	if domain.RunEnded(rec.GetRun().GetState()) {
		return nil
	}
	poll := time.NewTicker(watchPoll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-poll.C:
			if rec, err := r.get(ctx, req.GetRunId()); err == nil && domain.RunEnded(rec.GetRun().GetState()) {
				return stream.Send(&latchkeyv1.WatchRunResponse{Run: rec.GetRun(), Event: "current", Time: timestamppb.Now()})
			}
		case m := <-ch:
			ev := &eventsv1.RunEvent{}
			if proto.Unmarshal(m.Data, ev) != nil {
				continue
			}
			if err := stream.Send(&latchkeyv1.WatchRunResponse{Run: ev.GetRun(), Event: ev.GetEvent(), Time: ev.GetTime()}); err != nil {
				return err
			}
			if domain.RunEnded(ev.GetRun().GetState()) {
				return nil
			}
		}
	}
}

// watchPoll is how often WatchRun re-reads a Run it watches.
const watchPoll = 2 * time.Second
