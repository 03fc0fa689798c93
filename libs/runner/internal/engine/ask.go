package engine

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/domain"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// ask stops the task for more information: it publishes a REQUESTED_MORE_INFO result,
// holds the browser context open (the task's deadline paused) and waits, bounded, for
// the answer on lk.resume.<run>.
func (e *execution) Ask(ctx context.Context, q sdk.Question) (string, error) {
	if e.askFn != nil {
		return e.askFn(ctx, q)
	}
	if e.interim == nil || e.r.deps.Vault == nil {
		return "", sdk.Fail(reasonMoreInfo, "the flow asks for %q, and this task cannot ask", q.Field)
	}
	wait := q.Wait
	if wait <= 0 {
		wait = e.r.cfg.AskWait
	}
	runID := e.task.GetRunId()
	answers := e.r.expectResume(runID)
	defer e.r.forgetResume(runID, answers)
	e.deadline.pause()
	defer e.deadline.resume()

	e.mu.Lock()
	e.asks++
	n := e.asks
	e.mu.Unlock()
	interim := proto.Clone(e.res).(*runnerv1.TaskResult)
	interim.Status = statusMoreInfo
	interim.MoreInfo = &latchkeyv1.MoreInfoRequest{
		Field: q.Field, Prompt: q.Prompt, Choices: q.Choices, ExpireTime: timestamppb.New(time.Now().Add(wait)),
	}
	if err := e.interim(withAsk(ctx, n), interim); err != nil {
		return "", sdk.Infra("publishing the question: %w", err)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case b := <-answers:
			ans, ok, err := e.openAnswers(ctx, b, q)
			if err != nil {
				return "", err
			}
			if ok {
				return ans, nil
			}
		case <-timer.C:
			return "", sdk.Fail(reasonMoreInfo, "nobody answered %q within %s", q.Field, wait)
		case <-ctx.Done():
			return "", sdk.CauseOf(ctx)
		}
	}
}

// openAnswers opens a sealed TaskResume and returns the answer to q, if it has one
// that is allowed.
func (e *execution) openAnswers(ctx context.Context, b []byte, q sdk.Question) (string, bool, error) {
	var msg runnerv1.TaskResume
	if err := proto.Unmarshal(b, &msg); err != nil {
		e.r.log.WarnContext(ctx, "ignoring a resume message that does not decode", "run_id", e.task.GetRunId())
		return "", false, nil
	}
	runID := e.task.GetRunId()
	plain, err := e.r.deps.Vault.Open(ctx, sdk.Sealed{Project: e.task.GetProjectId(), Kind: domain.KindResumeAnswers, ID: runID}, msg.GetAnswersCiphertext(), runID)
	if err != nil {
		if sdk.IsInfra(err) {
			return "", false, err
		}
		e.r.log.WarnContext(ctx, "ignoring resume answers that do not open", "run_id", runID, "error", err)
		return "", false, nil
	}
	fields, err := decodeFields(plain)
	if err != nil {
		e.r.log.WarnContext(ctx, "ignoring resume answers that are not a JSON object of strings", "run_id", runID)
		return "", false, nil
	}
	ans, ok := fields[q.Field]
	if !ok || (len(q.Choices) > 0 && !slices.Contains(q.Choices, ans)) {
		e.r.log.WarnContext(ctx, "resume answers lack the asked field or give a choice not offered", "run_id", runID, "field", q.Field)
		return "", false, nil
	}
	return ans, true, nil
}

// expectResume registers a channel for the answers to a Run's question; register it
// before publishing the question, so a fast answer is not lost.
func (r *Runner) expectResume(runID string) chan []byte {
	ch := make(chan []byte, 4)
	r.mu.Lock()
	r.waiting[runID] = ch
	r.mu.Unlock()
	return ch
}

func (r *Runner) forgetResume(runID string, ch chan []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.waiting[runID] == ch {
		delete(r.waiting, runID)
	}
}

// deliverResume hands a TaskResume to the task waiting on its Run, if it runs here.
func (r *Runner) deliverResume(runID string, data []byte) bool {
	r.mu.Lock()
	ch := r.waiting[runID]
	r.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case ch <- data:
	default:
	}
	return true
}

type askKey struct{}

// withAsk marks ctx with the number of the question, for the result's message id.
func withAsk(ctx context.Context, n int) context.Context { return context.WithValue(ctx, askKey{}, n) }

func askSuffix(ctx context.Context) string {
	if n, ok := ctx.Value(askKey{}).(int); ok {
		return fmt.Sprintf("-ask%d", n)
	}
	return ""
}
