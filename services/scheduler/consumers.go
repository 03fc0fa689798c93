package scheduler

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/bus"
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

func (s *Service) onResult(ctx context.Context, msg jetstream.Msg) error {
	res := &runnerv1.TaskResult{}
	if err := proto.Unmarshal(msg.Data(), res); err != nil {
		return fmt.Errorf("%w: undecodable task result: %v", consume.ErrTerminal, err)
	}
	return s.orch.HandleResult(ctx, res)
}

func (s *Service) onSessionEvent(ctx context.Context, msg jetstream.Msg) error {
	ev := &eventsv1.SessionEvent{}
	if err := proto.Unmarshal(msg.Data(), ev); err != nil {
		return fmt.Errorf("%w: undecodable session event: %v", consume.ErrTerminal, err)
	}
	if err := s.orch.HandleSessionEvent(ctx, ev); err != nil {
		return err
	}
	// Jobs pause when their AuthSession expires or is deleted (DESIGN.md section 3).
	return s.jobs.HandleSessionEvent(ctx, ev)
}

// onRunRequest starts a Run published on lk.runs.requests.<project>. The API key must
// belong to that project. A request that can never start is dropped, and when it named
// its run_id a FAILED Run event tells the publisher why.
func (s *Service) onRunRequest(ctx context.Context, msg jetstream.Msg) error {
	project := strings.TrimPrefix(msg.Subject(), "lk.runs.requests.")
	req := &latchkeyv1.RunRequest{}
	if err := proto.Unmarshal(msg.Data(), req); err != nil {
		return fmt.Errorf("%w: undecodable run request: %v", consume.ErrTerminal, err)
	}
	runID := req.GetRunId()
	reject := func(code codes.Code, why string) error {
		if runID != "" && bus.ValidToken(runID) {
			s.orch.Emit(ctx, &latchkeyv1.Run{
				Id: runID, ProjectId: project, State: latchkeyv1.RunState_RUN_STATE_FAILED, Api: req.GetRequest().GetApi(),
				FailureMessage: why, EndTime: timestamppb.Now(),
			}, "rejected")
		}
		return fmt.Errorf("%w: run request on %s: %s: %s", consume.ErrTerminal, msg.Subject(), code, why)
	}
	auth, err := s.deps.Registry.AuthenticateApiKey(ctx, &registryv1.AuthenticateApiKeyRequest{ApiKey: req.GetApiKey()})
	if status.Code(err) == codes.Unauthenticated || status.Code(err) == codes.InvalidArgument {
		return reject(codes.Unauthenticated, "unknown or revoked API key")
	}
	if err != nil {
		return err // the registry is unavailable: redeliver
	}
	if auth.GetProjectId() != project {
		return reject(codes.PermissionDenied, "the API key does not belong to the project named in the subject")
	}
	r := req.GetRequest()
	if r == nil {
		return reject(codes.InvalidArgument, "request is empty")
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
	_, err = s.runs.Start(ctx, project, false, r, runID)
	switch status.Code(err) {
	case codes.OK:
		return nil
	case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.PermissionDenied:
		return reject(status.Code(err), status.Convert(err).Message())
	default:
		return err
	}
}
