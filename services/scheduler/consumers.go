package scheduler

import (
	"bytes"
	"cmp"
	"context"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
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
	s.metrics.result(ctx, res)
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
	json, err := decodeRunRequest(msg, req)
	if err != nil {
		// A JSON publisher that named its run id learns why on that Run's events.
		s.orch.EmitRejected(ctx, project, runIDOf(msg.Data(), json), "", "undecodable run request: "+err.Error(), json)
		return fmt.Errorf("%w: undecodable run request: %v", consume.ErrTerminal, err)
	}
	runID := req.GetRunId()
	reject := func(err error) error {
		why := err.Error()
		s.orch.EmitRejected(ctx, project, runID, req.GetRequest().GetApi(), why, json)
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
	_, err = s.orch.Start(ctx, project, r, orch.StartOptions{RunID: runID, EventsJSON: json})
	if orch.Refused(err) {
		return reject(err)
	}
	return err
}

// decodeRunRequest decodes a run request as its Content-Type header says: protobuf
// (the default) or protojson. It reports whether the publisher asked for the Run's
// events in JSON: a JSON request, or an Accept header naming JSON.
func decodeRunRequest(msg jetstream.Msg, req *latchkeyv1.RunRequest) (json bool, err error) {
	h := msg.Headers()
	ct := mediaType(h.Get(bus.HeaderContentType))
	json = ct == bus.ContentTypeJSON || mediaType(h.Get(bus.HeaderAccept)) == bus.ContentTypeJSON
	switch ct {
	case bus.ContentTypeJSON:
		if err := protojson.Unmarshal(msg.Data(), req); err != nil {
			return json, fmt.Errorf("not a latchkey.v1.RunRequest in JSON: %v", err)
		}
	case "", bus.ContentTypeProtobuf, "application/x-protobuf":
		if err := proto.Unmarshal(msg.Data(), req); err != nil {
			hint := ""
			if d := bytes.TrimSpace(msg.Data()); len(d) > 0 && d[0] == '{' {
				hint = " (it looks like JSON: send it with the header Content-Type: application/json)"
			}
			return json, fmt.Errorf("not a latchkey.v1.RunRequest in protobuf: %v%s", err, hint)
		}
	default:
		return json, fmt.Errorf("Content-Type %q is neither %s nor %s", ct, bus.ContentTypeJSON, bus.ContentTypeProtobuf)
	}
	return json, nil
}

// mediaType is a Content-Type's media type, without parameters, in lower case.
func mediaType(v string) string {
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	return strings.ToLower(strings.TrimSpace(v))
}

// runIDOf reads the run id of a JSON run request that did not decode as a whole (an
// unknown field, a wrong type elsewhere); "" when it has none.
func runIDOf(data []byte, isJSON bool) string {
	if !isJSON {
		return ""
	}
	var probe struct {
		RunID  string `json:"runId"`
		RunID2 string `json:"run_id"`
	}
	if stdjson.Unmarshal(data, &probe) != nil {
		return ""
	}
	return cmp.Or(probe.RunID, probe.RunID2)
}
