package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// TestRegistrySessionEventsCarryTraceContext checks that session events reach
// lk.events.session.<project>.<session> with the W3C trace context of the RPC that
// caused them, so a consumer's span joins the caller's trace.
func TestRegistrySessionEventsCarryTraceContext(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewInMemoryExporter()
	r := startRegistry(t, stacktest.Options{SpanExporter: spans})
	c := r.newProject(t, "acme")
	c.deployPortal(t)

	nc, err := nats.Connect(r.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msgs := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe("lk.events.session.acme.rec", msgs)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	c.createSession(t, &latchkeyv1.CreateAuthSessionRequest{AuthSessionId: "rec", Type: latchkeyv1.SessionType_SESSION_TYPE_RECORDER, Recorder: &latchkeyv1.RecorderSettings{StartUrl: "http://x/"}})
	if _, err := c.sessions.ImportStorageState(t.Context(), &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "rec", StorageStateJson: []byte(regPlaywrightState)}); err != nil {
		t.Fatal(err)
	}
	traceOf := map[string]string{} // RPC method -> trace id of its server span
	for _, s := range spans.GetSpans() {
		if strings.HasPrefix(s.Name, "latchkey.v1.AuthSessionService/") {
			traceOf[strings.TrimPrefix(s.Name, "latchkey.v1.AuthSessionService/")] = s.SpanContext.TraceID().String()
		}
	}
	want := []struct {
		typ eventsv1.SessionEventType
		rpc string
	}{
		{eventsv1.SessionEventType_SESSION_EVENT_TYPE_CREATED, "CreateAuthSession"},
		{eventsv1.SessionEventType_SESSION_EVENT_TYPE_STATE_WRITTEN, "ImportStorageState"},
		{eventsv1.SessionEventType_SESSION_EVENT_TYPE_READY, "ImportStorageState"},
	}
	for _, w := range want {
		select {
		case m := <-msgs:
			ev := &eventsv1.SessionEvent{}
			if err := proto.Unmarshal(m.Data, ev); err != nil {
				t.Fatal(err)
			}
			tp := m.Header.Get("traceparent")
			if ev.GetType() != w.typ || traceOf[w.rpc] == "" || !strings.Contains(tp, traceOf[w.rpc]) {
				t.Errorf("event %v with traceparent %q; want %v in the trace of %s (%s)", ev.GetType(), tp, w.typ, w.rpc, traceOf[w.rpc])
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %v event", w.typ)
		}
	}
}
