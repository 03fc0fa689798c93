package e2e

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	"github.com/latchkey/latchkey/libs/bus"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// TestWatchRunEndsWhenItsEventIsLost plays a scheduler that wrote a Run's end into
// its record and died before publishing the event: WatchRun still ends, with the
// Run's final state, because it re-reads the record.
func TestWatchRunEndsWhenItsEventIsLost(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	nc, err := nats.Connect(w.st.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), bus.BucketRuns)
	if err != nil {
		t.Fatal(err)
	}
	const id = "run-lost-end-event"
	rec := &schedulerv1.RunRecord{Stage: schedulerv1.Stage_STAGE_DISPATCHED, UpdateTime: timestamppb.Now(), Run: &latchkeyv1.Run{
		Id: id, ProjectId: "acme", Kind: latchkeyv1.RunKind_RUN_KIND_API, Api: "list-invoices", State: latchkeyv1.RunState_RUN_STATE_RUNNING,
	}}
	put := func() {
		b, err := proto.Marshal(rec)
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := kv.Put(t.Context(), "run.acme."+id, b); err != nil {
			t.Error(err)
		}
	}
	put()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stream, err := w.runs.WatchRun(ctx, &latchkeyv1.WatchRunRequest{RunId: id})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetRun().GetState() != latchkeyv1.RunState_RUN_STATE_RUNNING {
		t.Fatalf("first message = %v, %v; want the RUNNING Run", first, err)
	}
	rec.Stage, rec.Run.State, rec.UpdateTime = schedulerv1.Stage_STAGE_DONE, latchkeyv1.RunState_RUN_STATE_SUCCEEDED, timestamppb.Now()
	put() // no event is published

	var last *latchkeyv1.Run
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("WatchRun did not end on its own once the Run had ended: %v", err)
		}
		last = m.GetRun()
	}
	if last.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("WatchRun ended with %v, want the SUCCEEDED Run", last)
	}
}
