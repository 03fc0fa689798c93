package engine

import (
	"context"
	"errors"
	"maps"

	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/interp"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// LocalRun is one recipe run in a local browser, without the services: the loop in
// which users write recipes (latchkey try).
type LocalRun struct {
	Bundle *recipe.Bundle
	API    string
	Params map[string]any
	// Credentials are given to auth-sessions/create only.
	Credentials sdk.Credentials
	// Vars override the bundle's vars.
	Vars map[string]string
	// State is restored before the first step, if set.
	State *latchkeyv1.StorageState
	// Observer sees every step as it ends.
	Observer func(sdk.StepEvent)
	// Ask answers ask steps; without it they fail MORE_INFO_REQUIRED.
	Ask func(ctx context.Context, q sdk.Question) (string, error)
	// Artifact receives screenshots (of screenshot steps and failed steps).
	Artifact func(id string, png []byte)
}

// LocalResult is how a LocalRun ended.
type LocalResult struct {
	// Outcome is the check's answer when the API is auth-sessions/check.
	Outcome latchkeyv1.CheckOutcome
	// Output is the API's JSON output.
	Output any
	// Failure is why the API failed, if it did.
	Failure *sdk.Failure
	// State is the state the browser ended with.
	State *latchkeyv1.StorageState
}

// RunLocal runs one API of a bundle in a new browser context. Its error is for
// problems of the runner itself; a failing recipe is a LocalResult.Failure.
func (r *Runner) RunLocal(ctx context.Context, lr LocalRun) (*LocalResult, error) {
	a := lr.Bundle.APIs[lr.API]
	if a == nil {
		return nil, errors.New("the bundle has no API " + lr.API)
	}
	params, err := toStruct(lr.Params)
	if err != nil {
		return nil, err
	}
	kind, md := runnerv1.TaskKind_TASK_KIND_API, interp.ModeAPI
	switch lr.API {
	case recipe.CheckAPI:
		kind, md = runnerv1.TaskKind_TASK_KIND_CHECK, interp.ModeCheck
	case recipe.CreateAPI:
		kind, md = runnerv1.TaskKind_TASK_KIND_CREATE, interp.ModeCreate
	}
	task := &runnerv1.RunnerTask{
		TaskId: "try", RunId: "try", ProjectId: "local", Kind: kind, Api: lr.API, Params: params,
		Session: &runnerv1.SessionRef{AuthSessionId: "local"}, FreshContext: true,
	}
	e := r.newExecution(ctx, task)
	defer e.cancel(nil)
	defer e.deadline.stop()
	e.creds, e.observer, e.askFn, e.artifact = lr.Credentials, lr.Observer, lr.Ask, lr.Artifact
	if e.askFn == nil {
		e.askFn = func(context.Context, sdk.Question) (string, error) {
			return "", sdk.Fail(reasonMoreInfo, "the recipe asks a question and nobody can answer here")
		}
	}
	if err := e.acquire(); err != nil {
		return nil, err
	}
	defer func() { r.pool.CloseContext(e.bc); e.bc = nil }()
	tab, stop := e.tabContext()
	defer stop()
	if lr.State != nil {
		if err := e.restore(tab, lr.State, [32]byte{}, 0); err != nil {
			return nil, err
		}
	}
	vars := maps.Clone(lr.Bundle.Vars)
	if vars == nil {
		vars = map[string]string{}
	}
	maps.Copy(vars, lr.Vars)
	out, perr := e.runProgram(tab, &program{api: lr.API, recipe: a, vars: vars}, md)
	res := &LocalResult{Output: out}
	if md == interp.ModeCheck {
		res.Outcome = checkOutcome(perr)
	}
	var f *sdk.Failure
	switch {
	case errors.As(perr, &f):
		res.Failure = f
	case perr != nil:
		return nil, perr
	}
	if tab.Err() == nil {
		st, err := e.bc.Capture(tab, e.bc.TakeVisited())
		if err != nil {
			return nil, err
		}
		res.State = st
	}
	return res, nil
}
