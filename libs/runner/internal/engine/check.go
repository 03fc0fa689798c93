package engine

import (
	"context"
	"errors"

	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// checkAnswered fills the result of a check that ran alone or answered other than
// VALID before an API.
func (e *execution) checkAnswered(tab context.Context, out any, cerr error) error {
	var f *sdk.Failure
	if errors.As(cerr, &f) {
		e.res.FailureMessage, e.res.FailedStep, e.res.ArtifactId = f.Message, stepProto(f.Step), f.ArtifactID
	} else if cerr != nil {
		e.res.FailureMessage = checkMessage(cerr)
	}
	switch e.res.CheckOutcome {
	case outcomeInvalid:
		e.res.Status = statusSucceeded
		if e.task.GetKind() == runnerv1.TaskKind_TASK_KIND_API {
			e.res.Status = statusNeedsAuth
		}
		return nil
	case outcomeInconclusive:
		e.res.Status = statusInconclusive
		return e.captureState(tab)
	}
	if err := e.setOutput(out); err != nil {
		return err
	}
	e.res.Status = statusSucceeded
	return e.captureState(tab)
}

// checkMessage explains a check that could not answer, without internals.
func checkMessage(err error) string {
	switch {
	case errors.Is(err, sdk.ErrDeadline):
		return "the check ran past the task's deadline"
	case errors.Is(err, sdk.ErrLoggedOut):
		return "the check says the state is not logged in"
	}
	return "the check could not tell: " + err.Error()
}

// checkOutcome is what a check answers when it ended with err.
func checkOutcome(err error) latchkeyv1.CheckOutcome {
	var f *sdk.Failure
	switch {
	case err == nil:
		return outcomeValid
	case errors.Is(err, sdk.ErrLoggedOut):
		return outcomeInvalid
	case errors.As(err, &f) && f.Outcome != latchkeyv1.CheckOutcome_CHECK_OUTCOME_UNSPECIFIED:
		return f.Outcome
	}
	return outcomeInconclusive
}
