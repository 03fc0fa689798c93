package store

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/errs"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

func TestSessionsCRUD(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{})
	ctx := t.Context()
	e.project(t, "acme")
	sess := e.session(t, "acme", "s1", credentials)
	if sess.Etag == 0 || sess.Rec.GetUid() == "" || sess.Public().GetCreateTime() == nil {
		t.Fatalf("created %v", sess)
	}
	_, err := e.s.CreateSession(ctx, &registryv1.SessionRecord{Session: &latchkeyv1.AuthSession{Id: "s1", ProjectId: "acme"}})
	wantKind(t, err, errs.ErrExists)
	_, err = e.s.GetSession(ctx, "other", "s1")
	wantKind(t, err, errs.ErrNotFound)
	_, err = e.s.GetSession(ctx, "acme", "S1")
	wantKind(t, err, errs.ErrInvalid)

	up, err := e.s.UpdateSession(ctx, "acme", "s1", sess.Etag, func(r *registryv1.SessionRecord) error {
		r.Session.DisplayName = "renamed"
		return nil
	})
	if err != nil || up.Rec.GetSession().GetDisplayName() != "renamed" || up.Etag <= sess.Etag {
		t.Fatalf("update = %v, %v", up, err)
	}
	_, err = e.s.UpdateSession(ctx, "acme", "s1", sess.Etag, func(*registryv1.SessionRecord) error { return nil })
	wantKind(t, err, errs.ErrStale)

	p := up.Public()
	p.Proxy = &latchkeyv1.Proxy{Server: "http://proxy", Password: "pw"}
	if (Session{Rec: &registryv1.SessionRecord{Session: p}}).Public().GetProxy().GetPassword() != "" {
		t.Error("Public shows a proxy password")
	}

	if _, err := e.s.DeleteSession(ctx, "acme", "s1"); err != nil {
		t.Fatal(err)
	}
	_, err = e.s.GetSession(ctx, "acme", "s1")
	wantKind(t, err, errs.ErrNotFound)
	_, err = e.s.DeleteSession(ctx, "acme", "s1")
	wantKind(t, err, errs.ErrNotFound)
}

func TestListSessionsFiltersAndPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{})
	ctx := t.Context()
	e.project(t, "acme")
	e.project(t, "other")
	for i := range 9 {
		id := fmt.Sprintf("s%02d", i)
		st := pending
		if i%3 == 0 {
			st = ready
		}
		_, err := e.s.CreateSession(ctx, &registryv1.SessionRecord{Session: &latchkeyv1.AuthSession{
			Id: id, ProjectId: "acme", State: st, Labels: map[string]string{"team": []string{"a", "b"}[i%2]},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	e.session(t, "other", "s00", credentials)
	list := func(f Filter, size int) (ids []string, pages int) {
		token := ""
		for {
			got, next, err := e.s.ListSessions(ctx, "acme", f, Page{Size: size, Token: token})
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, a := range got {
				if a.GetProjectId() != "acme" || a.GetEtag() == 0 {
					t.Fatalf("listed %v", a)
				}
				ids = append(ids, a.GetId())
			}
			if next == "" {
				return ids, pages
			}
			token = next
		}
	}
	cases := []struct {
		name string
		f    Filter
		size int
		want string
	}{
		{"all in pages of 4", Filter{}, 4, "s00,s01,s02,s03,s04,s05,s06,s07,s08"},
		{"ready", Filter{States: []latchkeyv1.SessionState{ready}}, 2, "s00,s03,s06"},
		{"label", Filter{Labels: map[string]string{"team": "b"}}, 0, "s01,s03,s05,s07"},
		{"state and label", Filter{States: []latchkeyv1.SessionState{ready}, Labels: map[string]string{"team": "a"}}, 1, "s00,s06"},
		{"no match", Filter{Labels: map[string]string{"team": "c"}}, 0, ""},
	}
	for _, tc := range cases {
		ids, _ := list(tc.f, tc.size)
		if got := strings.Join(ids, ","); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
	// A deleted session (whose key's purge marker stays in the stream) is not listed.
	if _, err := e.s.DeleteSession(ctx, "acme", "s01"); err != nil {
		t.Fatal(err)
	}
	if ids, _ := list(Filter{}, 4); strings.Join(ids, ",") != "s00,s02,s03,s04,s05,s06,s07,s08" {
		t.Errorf("after a delete: %v", ids)
	}
	_, next, _ := e.s.ListSessions(ctx, "acme", Filter{}, Page{Size: 1})
	_, _, err := e.s.ListSessions(ctx, "other", Filter{}, Page{Token: next})
	wantKind(t, err, errs.ErrInvalid)
	_, _, err = e.s.ListSessions(ctx, "acme", Filter{States: []latchkeyv1.SessionState{ready}}, Page{Token: next})
	wantKind(t, err, errs.ErrInvalid)
}

func TestListDue(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{})
	ctx := t.Context()
	now := time.Now()
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(d)) }
	for _, s := range []struct {
		id    string
		state latchkeyv1.SessionState
		a     *latchkeyv1.AuthSession
	}{
		{"overdue", ready, &latchkeyv1.AuthSession{NextRefreshTime: ts(-time.Hour)}},
		{"due", ready, &latchkeyv1.AuthSession{NextRefreshTime: ts(-time.Minute)}},
		{"later", ready, &latchkeyv1.AuthSession{NextRefreshTime: ts(time.Hour)}},
		{"keepalive", ready, &latchkeyv1.AuthSession{LastValidateTime: ts(-3 * time.Hour), Refresh: &latchkeyv1.RefreshSettings{KeepAliveInterval: durationpb.New(time.Hour)}}},
		{"disabled", ready, &latchkeyv1.AuthSession{NextRefreshTime: ts(-time.Hour), Refresh: &latchkeyv1.RefreshSettings{Disabled: true}}},
		{"expired", expired, &latchkeyv1.AuthSession{NextRefreshTime: ts(-time.Hour)}},
		{"nothing", ready, &latchkeyv1.AuthSession{}},
	} {
		s.a.Id, s.a.ProjectId, s.a.State = s.id, "acme", s.state
		if _, err := e.s.CreateSession(ctx, &registryv1.SessionRecord{Session: s.a}); err != nil {
			t.Fatal(err)
		}
	}
	got, next, err := e.s.ListDue(ctx, now, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !next.Equal(now.Add(time.Hour)) {
		t.Errorf("next due %s, want in an hour (\"later\")", next.Sub(now))
	}
	var ids []string
	for _, a := range got {
		ids = append(ids, a.GetId())
	}
	if s := strings.Join(ids, ","); s != "keepalive,overdue,due" {
		t.Fatalf("due: %s", s)
	}
	if got, next, _ := e.s.ListDue(ctx, now, 1); len(got) != 1 || got[0].GetId() != "keepalive" || !next.Equal(now) {
		t.Fatalf("limit 1: %v, next due in %s; want keepalive and the rest due now", got, next.Sub(now))
	}
}
