package store

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/bus"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
)

// publishAttempts bounds the retries of an event publish.
const publishAttempts = 3

// publish sends ev on lk.events.session.<project>.<session> with the trace context of
// ctx, deduplicated by a message id made of the session, the record revision it
// reports and its type. The change it reports is already stored, so a publish that
// keeps failing is logged, not returned: the record stays the source of truth.
func (s *Store) publish(ctx context.Context, etag uint64, ev *eventsv1.SessionEvent) {
	if ev.Time == nil {
		ev.Time = timestamppb.New(s.opts.Now())
	}
	subject, err := bus.SessionEventSubject(ev.GetProjectId(), ev.GetAuthSessionId())
	if err != nil {
		s.log.ErrorContext(ctx, "session event not published", "error", err)
		return
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		s.log.ErrorContext(ctx, "session event not published", "error", err)
		return
	}
	ctx, span := bus.StartProducerSpan(ctx, s.tracer, subject, "publish session event")
	defer span.End()
	msgID := fmt.Sprintf("%s.%s.%d.%d", ev.GetProjectId(), ev.GetAuthSessionId(), etag, ev.GetType())
	for attempt := 1; ; attempt++ {
		_, err = s.js.PublishMsg(ctx, bus.NewMsg(ctx, bus.Propagator(), subject, data, msgID))
		if err == nil {
			return
		}
		if attempt == publishAttempts || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(attempt) * 50 * time.Millisecond)
	}
	span.RecordError(err)
	s.log.ErrorContext(ctx, "session event not published", "subject", subject, "event", ev.GetType().String(), "error", err)
}
