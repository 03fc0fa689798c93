package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/domain"
	"github.com/latchkey/latchkey/libs/errs"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// Session is a session record as read, with its etag (the KV revision).
type Session struct {
	Rec  *registryv1.SessionRecord
	Etag uint64
}

// Public returns the session as the APIs show it: a copy with its etag set and the
// proxy password (never stored anyway) cleared.
func (s Session) Public() *latchkeyv1.AuthSession {
	a := proto.CloneOf(s.Rec.GetSession())
	a.Etag = s.Etag
	a.Site = domain.Site(a.GetSite()) // sessions stored before sites existed
	if a.GetProxy() != nil {
		a.Proxy.Password = ""
	}
	return a
}

func sessionNotFound(projectID, id string) error {
	return errs.New(errs.ErrNotFound, "auth session %q not found in project %q", id, projectID)
}

func sessionKey(projectID, id string) (string, error) {
	if err := CheckID("project id", projectID); err != nil {
		return "", err
	}
	if err := CheckID("auth session id", id); err != nil {
		return "", err
	}
	return projectID + "." + id, nil
}

// CreateSession stores a new session record; an existing id answers ErrExists. It
// publishes nothing: the caller publishes CREATED once the session's create Run is
// started (see PublishCreated), or removes it with DiscardSession.
func (s *Store) CreateSession(ctx context.Context, rec *registryv1.SessionRecord) (Session, error) {
	a := rec.GetSession()
	key, err := sessionKey(a.GetProjectId(), a.GetId())
	if err != nil {
		return Session{}, err
	}
	now := timestamppb.New(s.opts.Now())
	a.CreateTime, a.UpdateTime, a.Etag = now, now, 0
	rec.Uid = randomID(16)
	b, err := marshal(rec)
	if err != nil {
		return Session{}, err
	}
	rev, err := s.sessions.Create(ctx, key, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return Session{}, errs.New(errs.ErrExists, "auth session %q already exists in project %q", a.GetId(), a.GetProjectId())
	}
	if err != nil {
		return Session{}, fmt.Errorf("creating session: %w", err)
	}
	return Session{Rec: rec, Etag: rev}, nil
}

// PublishCreated publishes the CREATED event of a session.
func (s *Store) PublishCreated(ctx context.Context, sess Session, runID string) {
	a := sess.Rec.GetSession()
	s.publish(ctx, sess.Etag, &eventsv1.SessionEvent{
		ProjectId: a.GetProjectId(), AuthSessionId: a.GetId(), Type: eventsv1.SessionEventType_SESSION_EVENT_TYPE_CREATED,
		ToState: a.GetState(), RunId: runID,
	})
}

// DiscardSession removes a session that was just created and never announced (its
// create Run could not be started). Nothing else refers to it yet.
func (s *Store) DiscardSession(ctx context.Context, projectID, id string, etag uint64) error {
	key, err := sessionKey(projectID, id)
	if err != nil {
		return err
	}
	if err := s.sessions.Purge(ctx, key, jetstream.LastRevision(etag)); err != nil {
		return fmt.Errorf("discarding session: %w", err)
	}
	return nil
}

// GetSession reads a session.
func (s *Store) GetSession(ctx context.Context, projectID, id string) (Session, error) {
	key, err := sessionKey(projectID, id)
	if err != nil {
		return Session{}, err
	}
	rec := &registryv1.SessionRecord{}
	rev, err := getProto(ctx, s.sessions, key, rec)
	if isNotFound(err) {
		return Session{}, sessionNotFound(projectID, id)
	}
	if err != nil {
		return Session{}, fmt.Errorf("reading session: %w", err)
	}
	return Session{Rec: rec, Etag: rev}, nil
}

// UpdateSession applies fn to the session and writes it back with compare-and-swap.
// With etag 0 it retries on conflict, re-reading and re-applying fn; with an etag a
// stale one answers ErrStale carrying the current session.
func (s *Store) UpdateSession(ctx context.Context, projectID, id string, etag uint64, fn func(*registryv1.SessionRecord) error) (Session, error) {
	key, err := sessionKey(projectID, id)
	if err != nil {
		return Session{}, err
	}
	read := func(ctx context.Context) (*registryv1.SessionRecord, uint64, error) {
		cur, err := s.GetSession(ctx, projectID, id)
		if err != nil {
			return nil, 0, err
		}
		if etag != 0 && cur.Etag != etag {
			// With an etag, a lost swap is the caller's to resolve: no retry.
			return nil, 0, staleSession(cur, etag)
		}
		return cur.Rec, cur.Etag, nil
	}
	write := func(ctx context.Context, rec *registryv1.SessionRecord, rev uint64) (uint64, error) {
		b, err := marshal(rec)
		if err != nil {
			return 0, err
		}
		return s.sessions.Update(ctx, key, b, rev)
	}
	rec, rev, err := bus.Update(ctx, 0, read, write, func(rec *registryv1.SessionRecord) error {
		if err := fn(rec); err != nil {
			return err
		}
		rec.Session.UpdateTime = timestamppb.New(s.opts.Now())
		return nil
	})
	if err != nil {
		if errs.IsUser(err) || errors.Is(err, errs.ErrNotFound) {
			return Session{}, err
		}
		return Session{}, fmt.Errorf("updating session: %w", err)
	}
	return Session{Rec: rec, Etag: rev}, nil
}

func staleSession(cur Session, etag uint64) error {
	return errs.New(errs.ErrStale, "auth session %q changed: etag %d is stale, the current one is %d; read it again and retry",
		cur.Rec.GetSession().GetId(), etag, cur.Etag).WithDetail(cur.Public())
}

// DeleteSession deletes a session, its stored states (cached copies too) and
// publishes DELETED. It returns the deleted record, for the caller to delete the
// session's vault secrets.
func (s *Store) DeleteSession(ctx context.Context, projectID, id string) (Session, error) {
	cur, err := s.GetSession(ctx, projectID, id)
	if err != nil {
		return Session{}, err
	}
	key, _ := sessionKey(projectID, id)
	if err := s.sessions.Purge(ctx, key, jetstream.LastRevision(cur.Etag)); err != nil {
		if bus.IsConflict(err) {
			return Session{}, errs.New(errs.ErrStale, "auth session %q changed while being deleted; try again", id)
		}
		return Session{}, fmt.Errorf("deleting session: %w", err)
	}
	s.dropStates(context.WithoutCancel(ctx), projectID, id, cur.Rec.GetStates())
	a := cur.Rec.GetSession()
	s.publish(ctx, cur.Etag+1, &eventsv1.SessionEvent{
		ProjectId: projectID, AuthSessionId: id, Type: eventsv1.SessionEventType_SESSION_EVENT_TYPE_DELETED,
		FromState: a.GetState(),
	})
	return cur, nil
}

// HasSessions reports whether the project has a session on site.
func (s *Store) HasSessions(ctx context.Context, projectID, site string) (bool, error) {
	errFound := errors.New("found")
	err := bus.Scan(ctx, s.sessions, projectID+".*", false, func(e jetstream.KeyValueEntry) error {
		rec := &registryv1.SessionRecord{}
		if err := proto.Unmarshal(e.Value(), rec); err != nil {
			return fmt.Errorf("reading session %s: %w", e.Key(), err)
		}
		if domain.Site(rec.GetSession().GetSite()) == domain.Site(site) {
			return errFound
		}
		return nil
	})
	if errors.Is(err, errFound) {
		return true, nil
	}
	return false, err
}

// Filter selects sessions in ListSessions.
type Filter struct {
	States []latchkeyv1.SessionState
	Labels map[string]string
}

func (f Filter) match(a *latchkeyv1.AuthSession) bool {
	if len(f.States) > 0 && !slices.Contains(f.States, a.GetState()) {
		return false
	}
	for k, v := range f.Labels {
		if got, ok := a.GetLabels()[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// scope binds a page token to the project and the filter it was made for.
func (f Filter) scope(projectID string) string {
	var b strings.Builder
	b.WriteString("sessions/" + projectID + "/")
	for _, st := range f.States {
		fmt.Fprintf(&b, "%d,", st)
	}
	for _, k := range slices.Sorted(maps.Keys(f.Labels)) {
		fmt.Fprintf(&b, "/%q=%q", k, f.Labels[k])
	}
	return b.String()
}

// ListSessions lists a project's sessions by id, filtered.
func (s *Store) ListSessions(ctx context.Context, projectID string, f Filter, page Page) ([]*latchkeyv1.AuthSession, string, error) {
	if err := CheckID("project id", projectID); err != nil {
		return nil, "", err
	}
	size, err := page.size()
	if err != nil {
		return nil, "", err
	}
	scope := f.scope(projectID)
	after, err := page.after(scope)
	if err != nil {
		return nil, "", err
	}
	keys, err := s.listKeys(ctx, s.sessions, projectID+".*")
	if err != nil {
		return nil, "", err
	}
	prefix := projectID + "."
	start, _ := slices.BinarySearch(keys, prefix+after)
	if after != "" && start < len(keys) && keys[start] == prefix+after {
		start++
	}
	var out []*latchkeyv1.AuthSession
	// Read the records a page at a time, concurrently, and keep those that match.
	for i := start; i < len(keys); {
		batch := keys[i:min(i+size, len(keys))]
		sessions, err := s.getMany(ctx, projectID, batch)
		if err != nil {
			return nil, "", err
		}
		for j, sess := range sessions {
			if sess.Rec == nil || !f.match(sess.Rec.GetSession()) {
				continue // deleted since listed, or filtered out
			}
			out = append(out, sess.Public())
			if len(out) == size {
				if i+j+1 == len(keys) {
					return out, "", nil
				}
				return out, nextToken(scope, sess.Rec.GetSession().GetId()), nil
			}
		}
		i += len(batch)
	}
	return out, "", nil
}

// listConcurrency bounds the parallel reads of a list page.
const listConcurrency = 16

// getMany reads the sessions under keys (each "<project>.<id>") concurrently; a
// missing one is left zero.
func (s *Store) getMany(ctx context.Context, projectID string, keys []string) ([]Session, error) {
	out := make([]Session, len(keys))
	failed := make([]error, len(keys))
	sem := make(chan struct{}, listConcurrency)
	var wg sync.WaitGroup
	for i, k := range keys {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			sess, err := s.GetSession(ctx, projectID, strings.TrimPrefix(k, projectID+"."))
			if err != nil && !errors.Is(err, errs.ErrNotFound) {
				failed[i] = err
				return
			}
			out[i] = sess
		})
	}
	wg.Wait()
	return out, errors.Join(failed...)
}

// DueTime is when proactive refresh should next validate a READY session: its
// next_refresh_time, or its last validation (else its last update) plus the
// keep-alive interval; zero when nothing is scheduled or refresh is disabled.
func DueTime(a *latchkeyv1.AuthSession) time.Time {
	if a.GetState() != latchkeyv1.SessionState_SESSION_STATE_READY || a.GetRefresh().GetDisabled() {
		return time.Time{}
	}
	if t := a.GetNextRefreshTime(); t != nil {
		return t.AsTime()
	}
	if ka := a.GetRefresh().GetKeepAliveInterval(); ka != nil && ka.AsDuration() > 0 {
		from := a.GetLastValidateTime()
		if from == nil {
			from = a.GetUpdateTime()
		}
		return from.AsTime().Add(ka.AsDuration())
	}
	return time.Time{}
}

// ListDue lists READY sessions of every project whose DueTime is at or before now,
// most overdue first, at most limit, and when the next one falls due: the earliest
// DueTime after now, now itself when more than limit were due, zero when none will.
// It reads every session record: it is meant for a periodic sweep, not for a hot path.
func (s *Store) ListDue(ctx context.Context, now time.Time, limit int) ([]*latchkeyv1.AuthSession, time.Time, error) {
	type due struct {
		at time.Time
		a  *latchkeyv1.AuthSession
	}
	var found []due
	var next time.Time
	err := bus.Scan(ctx, s.sessions, ">", false, func(e jetstream.KeyValueEntry) error {
		rec := &registryv1.SessionRecord{}
		if err := proto.Unmarshal(e.Value(), rec); err != nil {
			return fmt.Errorf("decoding session %s: %w", e.Key(), err)
		}
		a := Session{Rec: rec, Etag: e.Revision()}.Public()
		switch at := DueTime(a); {
		case at.IsZero():
		case !at.After(now):
			found = append(found, due{at, a})
		case next.IsZero() || at.Before(next):
			next = at
		}
		return nil
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	sort.SliceStable(found, func(i, j int) bool { return found[i].at.Before(found[j].at) })
	if len(found) > limit {
		next = now
	}
	out := make([]*latchkeyv1.AuthSession, 0, min(limit, len(found)))
	for _, d := range found[:min(limit, len(found))] {
		out = append(out, d.a)
	}
	return out, next, nil
}

// PublishUpdated publishes the UPDATED event of a session whose settings changed.
func (s *Store) PublishUpdated(ctx context.Context, sess Session) {
	a := sess.Rec.GetSession()
	s.publish(ctx, sess.Etag, &eventsv1.SessionEvent{
		ProjectId: a.GetProjectId(), AuthSessionId: a.GetId(), Type: eventsv1.SessionEventType_SESSION_EVENT_TYPE_UPDATED,
		FromState: a.GetState(), ToState: a.GetState(), StateRevision: a.GetStateRevision(),
	})
}

// CountByState counts the sessions of every project by state. Like ListDue it reads
// every session record: callers cache its answer (the sessions gauge reads it at most
// every 15 s).
func (s *Store) CountByState(ctx context.Context) (map[latchkeyv1.SessionState]int64, error) {
	counts := map[latchkeyv1.SessionState]int64{}
	err := bus.Scan(ctx, s.sessions, ">", false, func(e jetstream.KeyValueEntry) error {
		rec := &registryv1.SessionRecord{}
		if err := proto.Unmarshal(e.Value(), rec); err != nil {
			return fmt.Errorf("decoding session %s: %w", e.Key(), err)
		}
		counts[rec.GetSession().GetState()]++
		return nil
	})
	return counts, err
}
