package api

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/services/scheduler/internal/jobs"
	"github.com/latchkey/latchkey/services/scheduler/internal/store"
)

// Runs implements jobs.Runs: a Job's child Runs go through the same Start as StartRun,
// so every validation and AuthSession rule applies to them.
var _ jobs.Runs = (*Runs)(nil)

// StartChild starts a child Run of a JobRun. A refusal a user must fix (the API is no
// longer deployed, the session is EXPIRED or gone) is stored as an ended Run with the
// refusal's message, so ListRuns with the JobRun's id shows why.
func (r *Runs) StartChild(ctx context.Context, proj string, req *latchkeyv1.StartRunRequest, runID, jobRunID string) error {
	_, err := r.start(ctx, proj, false, req, runID, jobRunID)
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.FailedPrecondition, codes.InvalidArgument, codes.NotFound, codes.PermissionDenied:
	default:
		return err
	}
	expired := hasErrorReason(st, "AUTH_SESSION_EXPIRED")
	now := timestamppb.Now()
	run := &latchkeyv1.Run{
		Id: runID, ProjectId: proj, Kind: latchkeyv1.RunKind_RUN_KIND_API, State: latchkeyv1.RunState_RUN_STATE_FAILED,
		Api: req.GetApi(), Params: req.GetParams(), AuthSessionId: req.GetAuthSessionId(), Options: req.GetOptions(),
		JobRunId: jobRunID, FailureMessage: st.Message(), CreateTime: now, EndTime: now,
	}
	if expired {
		run.State, run.FailureReason = latchkeyv1.RunState_RUN_STATE_CANCELED, latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED
	}
	if err := r.Store.Create(ctx, &schedulerv1.RunRecord{Run: run, Stage: schedulerv1.Stage_STAGE_DONE}); err == nil {
		r.Orch.Emit(ctx, run, "rejected")
	}
	if expired {
		return jobs.ErrSessionExpired
	}
	return fmt.Errorf("%w: %s", jobs.ErrCannotStart, st.Message())
}

// RunState returns the state of a Run; found is false when it has no record.
func (r *Runs) RunState(ctx context.Context, proj, runID string) (latchkeyv1.RunState, bool, error) {
	rec, _, err := r.Store.Get(ctx, proj, runID)
	if errors.Is(err, store.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return rec.GetRun().GetState(), true, nil
}

// Cancel cancels a Run that has not ended; a Run with no record is no error.
func (r *Runs) Cancel(ctx context.Context, proj, runID string) error {
	if err := r.Orch.Cancel(ctx, proj, runID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

func hasErrorReason(st *status.Status, reason string) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == reason {
			return true
		}
	}
	return false
}
