package store

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/errs"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

const (
	credentials = latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS
	recorder    = latchkeyv1.SessionType_SESSION_TYPE_RECORDER
)

// inState creates a session with a stored state and walks it to state.
func (e env) inState(t *testing.T, project, id string, typ latchkeyv1.SessionType, state latchkeyv1.SessionState) Session {
	t.Helper()
	ctx := t.Context()
	e.session(t, project, id, typ)
	if _, err := e.s.PutState(ctx, project, id, []byte("sealed"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	path := map[latchkeyv1.SessionState][]latchkeyv1.SessionState{
		pending: nil, ready: {ready}, recreating: {ready, recreating}, expired: {expired},
	}[state]
	for _, to := range path {
		cur, err := e.s.GetSession(ctx, project, id)
		if err != nil {
			t.Fatal(err)
		}
		if _, err = e.s.Transition(ctx, &registryv1.TransitionSessionRequest{
			ProjectId: project, AuthSessionId: id, ExpectedEtag: cur.Etag, ToState: to,
		}); err != nil {
			t.Fatal(err)
		}
	}
	cur, err := e.s.GetSession(ctx, project, id)
	if err != nil {
		t.Fatal(err)
	}
	return cur
}

func TestTransitionsFollowTheStateMachine(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{})
	e.project(t, "acme")
	all := []latchkeyv1.SessionState{pending, ready, recreating, expired}
	want := map[[2]latchkeyv1.SessionState]eventsv1.SessionEventType{
		{pending, ready}:      eventsv1.SessionEventType_SESSION_EVENT_TYPE_READY,
		{pending, expired}:    eventsv1.SessionEventType_SESSION_EVENT_TYPE_EXPIRED,
		{ready, ready}:        eventsv1.SessionEventType_SESSION_EVENT_TYPE_UNSPECIFIED,
		{ready, recreating}:   eventsv1.SessionEventType_SESSION_EVENT_TYPE_RECREATING,
		{ready, expired}:      eventsv1.SessionEventType_SESSION_EVENT_TYPE_EXPIRED,
		{recreating, ready}:   eventsv1.SessionEventType_SESSION_EVENT_TYPE_RECREATED,
		{recreating, expired}: eventsv1.SessionEventType_SESSION_EVENT_TYPE_EXPIRED,
		{expired, ready}:      eventsv1.SessionEventType_SESSION_EVENT_TYPE_READY,
		{expired, recreating}: eventsv1.SessionEventType_SESSION_EVENT_TYPE_RECREATING,
	}
	n := 0
	for _, from := range all {
		for _, to := range all {
			n++
			id := "s" + strings.ToLower(from.String()[14:17]+to.String()[14:17])
			t.Run(from.String()+"->"+to.String(), func(t *testing.T) {
				t.Parallel()
				sess := e.inState(t, "acme", id, credentials, from)
				events := e.events(t, "acme", id)
				got, err := e.s.Transition(t.Context(), &registryv1.TransitionSessionRequest{
					ProjectId: "acme", AuthSessionId: id, ExpectedEtag: sess.Etag, ToState: to,
					Reason: latchkeyv1.FailureReason_FAILURE_REASON_INVALID_CREDENTIALS, Message: "the portal said no", RunId: "run-1",
				})
				typ, legal := want[[2]latchkeyv1.SessionState{from, to}]
				if to == pending {
					wantKind(t, err, errs.ErrInvalid)
					return
				}
				if !legal {
					wantKind(t, err, errs.ErrPrecondition)
					var ue *errs.Error
					if errors.As(err, &ue); ue.Error() == "" || !strings.Contains(ue.Error(), "cannot go from") {
						t.Errorf("message %q", err)
					}
					after, _ := e.s.GetSession(t.Context(), "acme", id)
					if after.Etag != sess.Etag {
						t.Error("a refused transition changed the record")
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if got.Rec.GetSession().GetState() != to || got.Etag <= sess.Etag {
					t.Fatalf("after: %v etag %d", got.Rec.GetSession().GetState(), got.Etag)
				}
				if to == expired && got.Rec.GetSession().GetStateReason() != latchkeyv1.FailureReason_FAILURE_REASON_INVALID_CREDENTIALS {
					t.Errorf("reason not kept: %v", got.Rec.GetSession())
				}
				if to == ready && (got.Rec.GetSession().GetStateReason() != 0 || got.Rec.GetKnownGoodRevision() != 1) {
					t.Errorf("READY keeps a reason or has no known-good revision: %v", got.Rec)
				}
				if typ == eventsv1.SessionEventType_SESSION_EVENT_TYPE_UNSPECIFIED {
					return
				}
				ev, msg := nextEvent(t, events)
				if ev.GetType() != typ || ev.GetFromState() != from || ev.GetToState() != to || ev.GetRunId() != "run-1" || ev.GetAuthSessionId() != id {
					t.Errorf("event %v", ev)
				}
				if msg.Header.Get("Nats-Msg-Id") == "" {
					t.Error("event without a message id")
				}
			})
		}
	}
	if n != 16 {
		t.Fatal(n)
	}
}

func TestTransitionRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{})
	ctx := t.Context()
	e.project(t, "acme")
	rec := e.inState(t, "acme", "rec", recorder, ready)
	_, err := e.s.Transition(ctx, &registryv1.TransitionSessionRequest{ProjectId: "acme", AuthSessionId: "rec", ExpectedEtag: rec.Etag, ToState: recreating})
	wantKind(t, err, errs.ErrPrecondition)

	bare := e.session(t, "acme", "bare", credentials)
	_, err = e.s.Transition(ctx, &registryv1.TransitionSessionRequest{ProjectId: "acme", AuthSessionId: "bare", ExpectedEtag: bare.Etag, ToState: ready})
	wantKind(t, err, errs.ErrPrecondition)

	cases := []struct {
		name string
		req  *registryv1.TransitionSessionRequest
		kind error
	}{
		{"no etag", &registryv1.TransitionSessionRequest{ProjectId: "acme", AuthSessionId: "rec", ToState: expired}, errs.ErrInvalid},
		{"no state", &registryv1.TransitionSessionRequest{ProjectId: "acme", AuthSessionId: "rec", ExpectedEtag: rec.Etag}, errs.ErrInvalid},
		{"bad id", &registryv1.TransitionSessionRequest{ProjectId: "acme", AuthSessionId: "Bad.Id", ExpectedEtag: 1, ToState: expired}, errs.ErrInvalid},
		{"missing", &registryv1.TransitionSessionRequest{ProjectId: "acme", AuthSessionId: "nope", ExpectedEtag: 1, ToState: expired}, errs.ErrNotFound},
		{"other project", &registryv1.TransitionSessionRequest{ProjectId: "other", AuthSessionId: "rec", ExpectedEtag: rec.Etag, ToState: expired}, errs.ErrNotFound},
		{"unknown revision", &registryv1.TransitionSessionRequest{ProjectId: "acme", AuthSessionId: "rec", ExpectedEtag: rec.Etag, ToState: ready, StateRevision: 7}, errs.ErrPrecondition},
		{"long message", &registryv1.TransitionSessionRequest{ProjectId: "acme", AuthSessionId: "rec", ExpectedEtag: rec.Etag, ToState: expired, Message: strings.Repeat("m", MaxStateMessage+1)}, errs.ErrInvalid},
	}
	for _, tc := range cases {
		_, err := e.s.Transition(ctx, tc.req)
		if !errors.Is(err, tc.kind) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.kind)
		}
	}
	if after, _ := e.s.GetSession(ctx, "acme", "rec"); after.Etag != rec.Etag {
		t.Error("refused transitions changed the record")
	}
}

// TestConcurrentTransitionsOneWins races transitions from the same etag: exactly one
// wins, every loser gets ErrStale carrying the winner's record and etag.
func TestConcurrentTransitionsOneWins(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{})
	ctx := t.Context()
	e.project(t, "acme")
	sess := e.inState(t, "acme", "busy", credentials, ready)
	events := e.events(t, "acme", "busy")
	const racers = 12
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []Session
		losers  []*latchkeyv1.AuthSession
	)
	for i := range racers {
		wg.Go(func() {
			to := recreating
			if i%2 == 1 {
				to = expired
			}
			got, err := e.s.Transition(ctx, &registryv1.TransitionSessionRequest{
				ProjectId: "acme", AuthSessionId: "busy", ExpectedEtag: sess.Etag, ToState: to,
			})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				winners = append(winners, got)
				return
			}
			var ue *errs.Error
			if !errors.Is(err, errs.ErrStale) || !errors.As(err, &ue) {
				t.Errorf("loser got %v, want ErrStale", err)
				return
			}
			losers = append(losers, detailOf(t, ue))
		})
	}
	wg.Wait()
	if len(winners) != 1 || len(losers) != racers-1 {
		t.Fatalf("%d winners, %d losers", len(winners), len(losers))
	}
	w := winners[0]
	for _, l := range losers {
		if l.GetEtag() != w.Etag || l.GetState() != w.Rec.GetSession().GetState() {
			t.Errorf("loser saw etag %d state %v, the winner wrote %d %v", l.GetEtag(), l.GetState(), w.Etag, w.Rec.GetSession().GetState())
		}
	}
	ev, _ := nextEvent(t, events)
	if ev.GetToState() != w.Rec.GetSession().GetState() {
		t.Errorf("event %v for the winner's %v", ev, w.Rec.GetSession().GetState())
	}
	select {
	case m := <-events:
		t.Errorf("a second event was published: %s", m.Subject)
	default:
	}
}

func detailOf(t *testing.T, ue *errs.Error) *latchkeyv1.AuthSession {
	t.Helper()
	st := ue.Detail()
	a, ok := st.(*latchkeyv1.AuthSession)
	if !ok {
		t.Fatalf("error %q carries no session", ue)
	}
	return proto.CloneOf(a)
}
