package orch

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// RunEndedFunc is told about a Run that has just ended, after its record is final and
// its last event is published. The Jobs engine uses it to count a JobRun's child and
// start the next one. It runs inside the call that ended the Run, so it must not block
// for long; a scheduler that dies before calling it is covered by the Jobs engine's
// reconciliation, which reads the child's Run record.
type RunEndedFunc func(ctx context.Context, run *latchkeyv1.Run)

// runEnded calls the RunEnded hook, if any.
func (o *Orchestrator) runEnded(ctx context.Context, run *latchkeyv1.Run) {
	if o.RunEnded != nil {
		o.RunEnded(ctx, run)
	}
}

// RefreshDueFunc is told the time a session's next proactive refresh falls due, when it
// is set: after a login and after a refresh check. It must not block.
type RefreshDueFunc func(at time.Time)

// refreshDue calls the RefreshDue hook, if any, for a refresh time that is set.
func (o *Orchestrator) refreshDue(at *timestamppb.Timestamp) {
	if o.RefreshDue != nil && at != nil {
		o.RefreshDue(at.AsTime())
	}
}

// CircuitOpenedFunc is told when a session's circuit opens (its login failures reached
// the threshold within the window). It must not block.
type CircuitOpenedFunc func(ctx context.Context)
