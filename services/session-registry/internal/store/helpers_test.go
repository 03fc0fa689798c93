package store

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/cache"
	"github.com/latchkey/latchkey/libs/errs"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/logging"
	"github.com/latchkey/latchkey/libs/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testkit.LibraryGoroutines()...)
}

type env struct {
	s  *Store
	nc *nats.Conn
	js jetstream.JetStream
}

// newEnv opens a Store over a fresh embedded NATS server and the given cache (an
// in-process one when nil).
func newEnv(t testing.TB, c cache.Cache, opts Options) env {
	t.Helper()
	_, nc, js := testkit.NATS(t)
	if c == nil {
		c = cache.NewResilient(cache.NewMemory(cache.MemoryOptions{}), nil)
	}
	s, err := Open(t.Context(), js, c, logging.Discard(), noop.NewTracerProvider(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return env{s: s, nc: nc, js: js}
}

func (e env) project(t testing.TB, id string) {
	t.Helper()
	if _, err := e.s.CreateProject(t.Context(), id, ""); err != nil {
		t.Fatal(err)
	}
}

func (e env) session(t testing.TB, project, id string, typ latchkeyv1.SessionType) Session {
	t.Helper()
	sess, err := e.s.CreateSession(t.Context(), &registryv1.SessionRecord{Session: &latchkeyv1.AuthSession{
		Id: id, ProjectId: project, Type: typ, State: latchkeyv1.SessionState_SESSION_STATE_PENDING,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return sess
}

// wantKind fails unless err is a user error of kind.
func wantKind(t testing.TB, err, kind error) {
	t.Helper()
	var ue *errs.Error
	if !errors.Is(err, kind) || !errors.As(err, &ue) {
		t.Fatalf("got error %v, want a user error of kind %v", err, kind)
	}
}

// events subscribes to a session's events from now on.
func (e env) events(t testing.TB, project, session string) <-chan *nats.Msg {
	t.Helper()
	subj, err := bus.SessionEventSubject(project, session)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *nats.Msg, 256)
	sub, err := e.nc.ChanSubscribe(subj, ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

func nextEvent(t testing.TB, ch <-chan *nats.Msg) (*eventsv1.SessionEvent, *nats.Msg) {
	t.Helper()
	select {
	case m := <-ch:
		ev := &eventsv1.SessionEvent{}
		if err := proto.Unmarshal(m.Data, ev); err != nil {
			t.Fatal(err)
		}
		return ev, m
	case <-time.After(5 * time.Second):
		t.Fatal("no session event within 5s")
		return nil, nil
	}
}
