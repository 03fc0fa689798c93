// Package api implements the scheduler's public RunService: StartRun (also used by the
// NATS intake), GetRun, ListRuns, CancelRun, ResumeRun and WatchRun.
package api

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/latchkey/latchkey/libs/errs"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/services/scheduler/internal/orch"
)

// Limits of the list APIs, answered with InvalidArgument when exceeded. StartRun's
// are the orchestrator's (orch.MaxTimeout, ...).
const (
	DefaultPageSize = 50
	MaxPageSize     = 500
)

// Runs implements latchkey.v1.RunService over the orchestrator, which owns starting
// and driving Runs. Handlers return its errors as they are: libs/server maps them to
// statuses (libs/errs), once for every service.
type Runs struct {
	latchkeyv1.UnimplementedRunServiceServer
	// orch is set when the scheduler starts (SetOrchestrator); calls before that
	// answer Unavailable.
	orch atomic.Pointer[orch.Orchestrator]
	NC   *nats.Conn
}

// SetOrchestrator lets the API answer.
func (r *Runs) SetOrchestrator(o *orch.Orchestrator) { r.orch.Store(o) }

// caller returns the orchestrator and the caller's project, once the scheduler has
// started.
func (r *Runs) caller(ctx context.Context) (*orch.Orchestrator, string, error) {
	o := r.orch.Load()
	if o == nil {
		return nil, "", errs.New(errs.ErrUnavailable, "the scheduler is starting: try again in a moment")
	}
	p, _ := server.PrincipalFrom(ctx)
	if p.ProjectID == "" {
		return nil, "", errs.New(errs.ErrDenied, "Runs belong to a project: call with a project API key (the admin key manages projects only)")
	}
	return o, p.ProjectID, nil
}

// StartRun queues a Run.
func (r *Runs) StartRun(ctx context.Context, req *latchkeyv1.StartRunRequest) (*latchkeyv1.StartRunResponse, error) {
	o, proj, err := r.caller(ctx)
	if err != nil {
		return nil, err
	}
	p, _ := server.PrincipalFrom(ctx)
	run, err := o.Start(ctx, proj, req, orch.StartOptions{Internal: p.Service != ""})
	if err != nil {
		return nil, err
	}
	return &latchkeyv1.StartRunResponse{Run: run}, nil
}

func (r *Runs) get(ctx context.Context, runID string) (*schedulerv1.RunRecord, error) {
	o, proj, err := r.caller(ctx)
	if err != nil {
		return nil, err
	}
	return o.Get(ctx, proj, runID)
}

// GetRun returns one Run.
func (r *Runs) GetRun(ctx context.Context, req *latchkeyv1.GetRunRequest) (*latchkeyv1.GetRunResponse, error) {
	rec, err := r.get(ctx, req.GetRunId())
	if err != nil {
		return nil, err
	}
	return &latchkeyv1.GetRunResponse{Run: rec.GetRun()}, nil
}

// CancelRun cancels a Run that has not ended.
func (r *Runs) CancelRun(ctx context.Context, req *latchkeyv1.CancelRunRequest) (*latchkeyv1.CancelRunResponse, error) {
	rec, err := r.get(ctx, req.GetRunId())
	if err != nil {
		return nil, err
	}
	run := rec.GetRun()
	if err := r.orch.Load().Cancel(ctx, run.GetProjectId(), run.GetId()); err != nil {
		return nil, fmt.Errorf("canceling run: %w", err)
	}
	if rec, err = r.get(ctx, req.GetRunId()); err != nil {
		return nil, err
	}
	return &latchkeyv1.CancelRunResponse{Run: rec.GetRun()}, nil
}

// ResumeRun answers a Run that asked for more information.
func (r *Runs) ResumeRun(ctx context.Context, req *latchkeyv1.ResumeRunRequest) (*latchkeyv1.ResumeRunResponse, error) {
	o, proj, err := r.caller(ctx)
	if err != nil {
		return nil, err
	}
	run, err := o.Resume(ctx, proj, req.GetRunId(), req.GetAnswers())
	if err != nil {
		return nil, err
	}
	return &latchkeyv1.ResumeRunResponse{Run: run}, nil
}
