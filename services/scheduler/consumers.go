package scheduler

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/errs"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/services/scheduler/internal/consume"
	"github.com/latchkey/latchkey/services/scheduler/internal/orch"
)

// specs are the scheduler's durable consumers, shared by every replica.
func (s *Service) specs() []consume.Spec {
	return []consume.Spec{
		{Stream: bus.StreamResults, Durable: "scheduler-results", Filter: bus.SubjectResultsAll, Workers: 16, SpanName: "task result", Handler: s.onResult},
		{Stream: bus.StreamEvents, Durable: "scheduler-session-events", Filter: bus.SubjectSessionEventAll, DeliverNew: true, Workers: 4, SpanName: "session event", Handler: s.onSessionEvent},
		{Stream: bus.StreamRuns, Durable: "scheduler-run-requests", Filter: bus.SubjectRunRequestsAll, Workers: 8, SpanName: "run request", Handler: s.onRunRequest},
	}
}

// settle turns the orchestrator's answer into what the consumer does with the
// message: a stale one is acked, a back-off is redelivered after its delay.
func settle(err error) error {
	var retry *orch.RetryAfter
	switch {
	case err == nil || orch.ErrStale(err):
		return nil
	case errors.As(err, &retry):
		return &consume.Redeliver{Delay: retry.Delay}
	}
	return err
}

func (s *Service) onResult(ctx context.Context, msg jetstream.Msg) error {
	res := &runnerv1.TaskResult{}
	if err := proto.Unmarshal(msg.Data(), res); err != nil {
		return fmt.Errorf("%w: undecodable task result: %v", consume.ErrTerminal, err)
	}
	return settle(s.orch.HandleResult(ctx, res))
}

func (s *Service) onSessionEvent(ctx context.Context, msg jetstream.Msg) error {
	ev := &eventsv1.SessionEvent{}
	if err := proto.Unmarshal(msg.Data(), ev); err != nil {
		return fmt.Errorf("%w: undecodable session event: %v", consume.ErrTerminal, err)
	}
	if err := settle(s.orch.HandleSessionEvent(ctx, ev)); err != nil {
		return err
	}
	// Jobs pause when their AuthSession expires or is deleted (DESIGN.md section 3).
	return s.jobs.HandleSessionEvent(ctx, ev)
}

// onRunRequest starts a Run published on lk.runs.requests.<project>. The API key must
// belong to that project. A request that can never start is dropped, and when it named
// its run_id a FAILED Run event tells the publisher why. This is the NATS edge, as
// the gRPC API is the other: the one place the intake maps refusals (to a code name
// in the event's message).
func (s *Service) onRunRequest(ctx context.Context, msg jetstream.Msg) error {
	project, ok := bus.RunRequestProject(msg.Subject())
	if !ok {
		return fmt.Errorf("%w: run request on %s: not a run request subject", consume.ErrTerminal, msg.Subject())
	}
	req := &latchkeyv1.RunRequest{}
	if err := proto.Unmarshal(msg.Data(), req); err != nil {
		return fmt.Errorf("%w: undecodable run request: %v", consume.ErrTerminal, err)
	}
	runID := req.GetRunId()
	reject := func(err error) error {
		why := err.Error()
		s.orch.EmitRejected(ctx, project, runID, req.GetRequest().GetApi(), why)
		return fmt.Errorf("%w: run request on %s: %s: %s", consume.ErrTerminal, msg.Subject(), status.Code(err), why)
	}
	auth, err := s.deps.Registry.AuthenticateApiKey(ctx, &registryv1.AuthenticateApiKeyRequest{ApiKey: req.GetApiKey()})
	if err = errs.FromStatus(err); errors.Is(err, errs.ErrUnauthenticated) || errors.Is(err, errs.ErrInvalid) {
		return reject(errs.New(errs.ErrUnauthenticated, "unknown or revoked API key"))
	}
	if err != nil {
		return err // the registry is unavailable: redeliver
	}
	if auth.GetProjectId() != project {
		return reject(errs.New(errs.ErrDenied, "the API key does not belong to the project named in the subject"))
	}
	r := req.GetRequest()
	if r == nil {
		return reject(errs.New(errs.ErrInvalid, "request is empty"))
	}
	if r.GetIdempotencyKey() == "" {
		if id := msg.Headers().Get(bus.HeaderMsgID); id != "" {
			r = proto.CloneOf(r)
			r.IdempotencyKey = "nats:" + id
		}
	}
	if runID == "" {
		runID = orch.NewID("run")
	}
	_, err = s.orch.Start(ctx, project, r, orch.StartOptions{RunID: runID})
	if orch.Refused(err) {
		return reject(err)
	}
	return err
}
