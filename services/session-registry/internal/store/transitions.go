package store

import (
	"context"
	"errors"
	"net/url"
	"slices"

	"github.com/latchkey/latchkey/libs/errs"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

const (
	pending    = latchkeyv1.SessionState_SESSION_STATE_PENDING
	ready      = latchkeyv1.SessionState_SESSION_STATE_READY
	recreating = latchkeyv1.SessionState_SESSION_STATE_RECREATING
	expired    = latchkeyv1.SessionState_SESSION_STATE_EXPIRED
)

// MaxStateMessage is the longest state message, in bytes.
const MaxStateMessage = 1000

// legal lists the transitions of PENDING -> READY <-> RECREATING -> EXPIRED, and the
// event each publishes. READY -> READY records a passed validation (times, revision)
// and publishes nothing; EXPIRED -> READY or RECREATING revives a session after a
// person acted (new credentials, an imported state).
var legal = map[latchkeyv1.SessionState]map[latchkeyv1.SessionState]eventsv1.SessionEventType{
	pending: {
		ready:   eventsv1.SessionEventType_SESSION_EVENT_TYPE_READY,
		expired: eventsv1.SessionEventType_SESSION_EVENT_TYPE_EXPIRED,
	},
	ready: {
		ready:      eventsv1.SessionEventType_SESSION_EVENT_TYPE_UNSPECIFIED,
		recreating: eventsv1.SessionEventType_SESSION_EVENT_TYPE_RECREATING,
		expired:    eventsv1.SessionEventType_SESSION_EVENT_TYPE_EXPIRED,
	},
	recreating: {
		ready:   eventsv1.SessionEventType_SESSION_EVENT_TYPE_RECREATED,
		expired: eventsv1.SessionEventType_SESSION_EVENT_TYPE_EXPIRED,
	},
	expired: {
		ready:      eventsv1.SessionEventType_SESSION_EVENT_TYPE_READY,
		recreating: eventsv1.SessionEventType_SESSION_EVENT_TYPE_RECREATING,
	},
}

// Legal reports whether a session may move from one state to another.
func Legal(from, to latchkeyv1.SessionState) bool {
	_, ok := legal[from][to]
	return ok
}

// Transition moves a session to req.to_state if req.expected_etag is still current
// (compare-and-swap) and the move is legal, and publishes the event. A stale etag
// answers ErrStale, an illegal move ErrPrecondition; both carry the current session.
func (s *Store) Transition(ctx context.Context, req *registryv1.TransitionSessionRequest) (Session, error) {
	to := req.GetToState()
	if to != ready && to != recreating && to != expired {
		return Session{}, errs.New(errs.ErrInvalid, "to_state must be READY, RECREATING or EXPIRED")
	}
	if req.GetExpectedEtag() == 0 {
		return Session{}, errs.New(errs.ErrInvalid, "expected_etag is required: pass the etag of the session as read with GetSession")
	}
	if len(req.GetMessage()) > MaxStateMessage {
		return Session{}, errs.New(errs.ErrInvalid, "message is %d bytes long, at most %d are allowed", len(req.GetMessage()), MaxStateMessage)
	}
	origins, err := cleanOrigins(req.GetOrigins())
	if err != nil {
		return Session{}, err
	}
	var from latchkeyv1.SessionState
	var current Session
	sess, err := s.UpdateSession(ctx, req.GetProjectId(), req.GetAuthSessionId(), req.GetExpectedEtag(), func(rec *registryv1.SessionRecord) error {
		current = Session{Rec: rec, Etag: req.GetExpectedEtag()}
		from = rec.GetSession().GetState()
		if err := checkTransition(rec, from, to, req.GetStateRevision()); err != nil {
			return err
		}
		applyTransition(rec, req)
		if len(origins) > 0 && to != recreating {
			rec.GetSession().Origins = origins
		}
		return nil
	})
	if err != nil {
		var e *errs.Error
		if errors.As(err, &e) && current.Rec != nil && errors.Is(err, errs.ErrPrecondition) {
			return Session{}, e.WithDetail(current.Public())
		}
		return Session{}, err
	}
	if typ := legal[from][to]; typ != eventsv1.SessionEventType_SESSION_EVENT_TYPE_UNSPECIFIED {
		a := sess.Rec.GetSession()
		s.publish(ctx, sess.Etag, &eventsv1.SessionEvent{
			ProjectId: a.GetProjectId(), AuthSessionId: a.GetId(), Type: typ, FromState: from, ToState: to,
			Reason: a.GetStateReason(), Message: a.GetStateMessage(), StateRevision: a.GetStateRevision(), RunId: req.GetRunId(),
		})
	}
	return sess, nil
}

func checkTransition(rec *registryv1.SessionRecord, from, to latchkeyv1.SessionState, revision int64) error {
	a := rec.GetSession()
	if !Legal(from, to) {
		return errs.New(errs.ErrPrecondition, "auth session %q cannot go from %s to %s", a.GetId(), stateName(from), stateName(to))
	}
	if to == recreating && a.GetType() == latchkeyv1.SessionType_SESSION_TYPE_RECORDER {
		return errs.New(errs.ErrPrecondition, "auth session %q is a RECORDER session: it is never recreated automatically; expire it, or record a new login", a.GetId())
	}
	if to != ready {
		return nil
	}
	if revision == 0 {
		revision = a.GetStateRevision()
	}
	if revision == 0 {
		return errs.New(errs.ErrPrecondition, "auth session %q has no storage state: store one with PutStorageState before making it READY", a.GetId())
	}
	if findRef(rec, revision) == nil {
		return errs.New(errs.ErrPrecondition, "auth session %q has no storage state revision %d", a.GetId(), revision)
	}
	return nil
}

func applyTransition(rec *registryv1.SessionRecord, req *registryv1.TransitionSessionRequest) {
	a := rec.GetSession()
	a.State = req.GetToState()
	switch req.GetToState() {
	case ready:
		a.StateReason, a.StateMessage = latchkeyv1.FailureReason_FAILURE_REASON_UNSPECIFIED, ""
		rec.KnownGoodRevision = req.GetStateRevision()
		if rec.KnownGoodRevision == 0 {
			rec.KnownGoodRevision = a.GetStateRevision()
		}
	default:
		a.StateReason, a.StateMessage = req.GetReason(), req.GetMessage()
	}
	if t := req.GetLastValidateTime(); t != nil {
		a.LastValidateTime = t
	}
	if t := req.GetNextRefreshTime(); t != nil {
		a.NextRefreshTime = t
	}
}

// MaxOrigins caps the origins a session keeps for its login budgets.
const MaxOrigins = 32

// cleanOrigins checks that each origin is scheme://host[:port] and returns them
// sorted and without repeats.
func cleanOrigins(in []string) ([]string, error) {
	if len(in) > MaxOrigins {
		return nil, errs.New(errs.ErrInvalid, "origins has %d entries, at most %d are allowed", len(in), MaxOrigins)
	}
	out := make([]string, 0, len(in))
	for i, o := range in {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil || len(o) > 255 {
			return nil, errs.New(errs.ErrInvalid, "origins[%d] must look like https://host[:port] (at most 255 bytes)", i)
		}
		out = append(out, o)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func stateName(s latchkeyv1.SessionState) string {
	if s == latchkeyv1.SessionState_SESSION_STATE_UNSPECIFIED {
		return "UNSPECIFIED"
	}
	return s.String()[len("SESSION_STATE_"):]
}
