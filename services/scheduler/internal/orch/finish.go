package orch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/cache"
	"github.com/latchkey/latchkey/libs/domain"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/services/scheduler/internal/store"
)

// finish ends a Run (no-op when it has ended already) and publishes its last event.
func (o *Orchestrator) finish(ctx context.Context, project, runID string, state latchkeyv1.RunState, reason latchkeyv1.FailureReason, msg string, output *structpb.Value, also ...func(*schedulerv1.RunRecord)) error {
	rec, err := o.end(ctx, project, runID, state, reason, msg, output, also...)
	if err != nil || rec == nil {
		return err
	}
	o.announce(ctx, rec)
	return nil
}

// end stores a Run as ended and returns its record, or nil when it had ended already.
// announce must follow.
func (o *Orchestrator) end(ctx context.Context, project, runID string, state latchkeyv1.RunState, reason latchkeyv1.FailureReason, msg string, output *structpb.Value, also ...func(*schedulerv1.RunRecord)) (*schedulerv1.RunRecord, error) {
	rec, err := o.Store.Update(ctx, project, runID, func(r *schedulerv1.RunRecord) error {
		if domain.RunEnded(r.GetRun().GetState()) {
			return store.ErrNoChange
		}
		r.Run.State, r.Run.EndTime, r.Stage = state, timestamppb.Now(), schedulerv1.Stage_STAGE_DONE
		r.TaskId, r.CandidateState, r.RuntimeCredentials = "", nil, nil
		if state != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			r.Run.FailureReason, r.Run.FailureMessage = reason, msg
		}
		if output != nil {
			r.Run.Output = output
		}
		for _, f := range also {
			f(r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if rec.GetStage() != schedulerv1.Stage_STAGE_DONE || rec.GetRun().GetState() != state {
		return nil, nil // it had ended already
	}
	return rec, nil
}

// announce tells of a Run end stores: its last event, the cancel signal of a canceled
// Run, the log line and the RunEnded hook.
func (o *Orchestrator) announce(ctx context.Context, rec *schedulerv1.RunRecord) {
	run := rec.GetRun()
	if rec.GetRuntimeCredentialsCached() {
		o.forgetRuntimeCredentials(ctx, run.GetId())
	}
	o.emit(ctx, rec, eventName(run.GetState()))
	if run.GetState() == latchkeyv1.RunState_RUN_STATE_CANCELED {
		if subj, err := bus.CancelSubject(run.GetId()); err == nil {
			_ = o.NC.Publish(subj, nil)
		}
	}
	o.Log.InfoContext(ctx, "run ended", "run_id", run.GetId(), "kind", run.GetKind().String(), "state", run.GetState().String(), "reason", run.GetFailureReason().String())
	o.runEnded(ctx, run)
}

func eventName(s latchkeyv1.RunState) string {
	switch s {
	case latchkeyv1.RunState_RUN_STATE_SUCCEEDED:
		return "succeeded"
	case latchkeyv1.RunState_RUN_STATE_FAILED:
		return "failed"
	case latchkeyv1.RunState_RUN_STATE_CANCELED:
		return "canceled"
	}
	return "changed"
}

// finishChild ends the validate child Run of an API attempt from the check's outcome.
func (o *Orchestrator) finishChild(ctx context.Context, project, childID string, outcome latchkeyv1.CheckOutcome, msg string) {
	if rec := o.endChild(ctx, project, childID, outcome, msg); rec != nil {
		o.announce(ctx, rec)
	}
}

// endChild stores the validate child Run ended from the check's outcome and returns
// its record to announce; nil when there is none, it had ended already, or the store
// failed (logged: the child is the record of a check, the API Run goes on).
func (o *Orchestrator) endChild(ctx context.Context, project, childID string, outcome latchkeyv1.CheckOutcome, msg string) *schedulerv1.RunRecord {
	if childID == "" {
		return nil
	}
	state, reason := latchkeyv1.RunState_RUN_STATE_FAILED, latchkeyv1.FailureReason_FAILURE_REASON_TRANSIENT
	switch outcome {
	case latchkeyv1.CheckOutcome_CHECK_OUTCOME_VALID:
		state, reason, msg = latchkeyv1.RunState_RUN_STATE_SUCCEEDED, 0, ""
	case latchkeyv1.CheckOutcome_CHECK_OUTCOME_INVALID:
		reason, msg = latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED, "the check found the session logged out"
	default:
		if msg == "" {
			msg = "the check could not tell whether the session is logged in"
		}
	}
	rec, err := o.end(ctx, project, childID, state, reason, msg, nil)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		o.Log.WarnContext(ctx, "ending validate run failed", "run_id", childID, "error", err)
	}
	return rec
}

// Runtime credentials are sealed by the vault for (project, domain.KindRuntimeCredentials,
// the API Run's id) and kept only in the short-lived cache (Redis or in-process), never in
// KV: DESIGN.md says they are never written anywhere durable. A Run whose cached
// credentials are gone cannot log in again and is canceled with a clear message.
func runtimeCredsKey(runID string) string { return "rtcreds." + runID }

// SealRuntimeCredentials seals a Run's credentials and caches the ciphertext for ttl.
func (o *Orchestrator) SealRuntimeCredentials(ctx context.Context, project, runID string, creds map[string]string, ttl time.Duration) error {
	b, err := (&structpb.Struct{Fields: stringFields(creds)}).MarshalJSON()
	if err != nil {
		return fmt.Errorf("encoding credentials: %w", err)
	}
	resp, err := o.Vault.Encrypt(ctx, &vaultv1.EncryptRequest{
		Context: &vaultv1.CryptoContext{ProjectId: project, Kind: domain.KindRuntimeCredentials, Id: runID}, Plaintext: b,
	})
	if err != nil {
		return fmt.Errorf("sealing runtime credentials: %w", err)
	}
	return o.Cache.Set(ctx, runtimeCredsKey(runID), resp.GetCiphertext(), ttl)
}

func stringFields(m map[string]string) map[string]*structpb.Value {
	out := make(map[string]*structpb.Value, len(m))
	for k, v := range m {
		out[k] = structpb.NewStringValue(v)
	}
	return out
}

// runtimeCredentials returns the credentials reference for a Run's task: the sealed
// runtime credentials of the API Run (its own, or its parent's for a create).
func (o *Orchestrator) runtimeCredentials(ctx context.Context, rec *schedulerv1.RunRecord) (*runnerv1.CredentialsRef, error) {
	for _, id := range []string{rec.GetRun().GetId(), rec.GetRun().GetParentRunId()} {
		if id == "" {
			continue
		}
		ct, err := o.Cache.Get(ctx, runtimeCredsKey(id))
		if errors.Is(err, cache.ErrMiss) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &runnerv1.CredentialsRef{Source: &runnerv1.CredentialsRef_Ciphertext{Ciphertext: ct}, CiphertextRunId: id}, nil
	}
	return nil, nil
}

func (o *Orchestrator) forgetRuntimeCredentials(ctx context.Context, runID string) {
	_ = o.Cache.Delete(ctx, runtimeCredsKey(runID))
}
