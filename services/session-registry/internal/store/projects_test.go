package store

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/libs/errs"
)

func TestProjects(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{})
	ctx := t.Context()
	p, err := e.s.CreateProject(ctx, "acme", "Acme Inc")
	if err != nil || p.GetId() != "acme" || p.GetDisplayName() != "Acme Inc" || p.GetCreateTime() == nil {
		t.Fatalf("CreateProject = %v, %v", p, err)
	}
	_, err = e.s.CreateProject(ctx, "acme", "again")
	wantKind(t, err, errs.ErrExists)
	for _, bad := range []string{"", "Acme", "-acme", "acme-", "a.b", "a b", strings.Repeat("a", 64)} {
		_, err := e.s.CreateProject(ctx, bad, "")
		wantKind(t, err, errs.ErrInvalid)
	}
	_, err = e.s.CreateProject(ctx, "long-name", strings.Repeat("x", MaxDisplayName+1))
	wantKind(t, err, errs.ErrInvalid)
	got, err := e.s.GetProject(ctx, "acme")
	if err != nil || got.GetDisplayName() != "Acme Inc" {
		t.Fatalf("GetProject = %v, %v", got, err)
	}
	_, err = e.s.GetProject(ctx, "nope")
	wantKind(t, err, errs.ErrNotFound)
}

func TestListProjectsPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{})
	for i := range 7 {
		e.project(t, fmt.Sprintf("p%d", i))
	}
	var ids []string
	token := ""
	for pages := 0; ; pages++ {
		ps, next, err := e.s.ListProjects(t.Context(), Page{Size: 3, Token: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			ids = append(ids, p.GetId())
		}
		if next == "" {
			if pages != 2 {
				t.Errorf("%d pages, want 3", pages+1)
			}
			break
		}
		token = next
	}
	if got := strings.Join(ids, ","); got != "p0,p1,p2,p3,p4,p5,p6" {
		t.Fatalf("listed %s", got)
	}
	_, _, err := e.s.ListProjects(t.Context(), Page{Token: "garbage"})
	wantKind(t, err, errs.ErrInvalid)
	_, _, err = e.s.ListProjects(t.Context(), Page{Size: -1})
	wantKind(t, err, errs.ErrInvalid)
}

func TestPurgeProjectLeavesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{InlineMaxBytes: 10})
	ctx := t.Context()
	for _, p := range []string{"gone", "kept"} {
		e.project(t, p)
		if _, _, err := e.s.CreateKey(ctx, p, "k"); err != nil {
			t.Fatal(err)
		}
		e.session(t, p, "s1", 1)
		if _, err := e.s.PutState(ctx, p, "s1", bytes.Repeat([]byte("c"), 20), PutOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, site := range []string{"", "crm"} {
			if _, err := e.s.DeployBundle(ctx, p, site, portalBundle(t), false); err != nil {
				t.Fatal(err)
			}
		}
	}
	if was, err := e.s.SetProjectDeleting(ctx, "gone", true); err != nil || was {
		t.Fatalf("SetProjectDeleting = %v, %v", was, err)
	}
	_, err := e.s.GetProject(ctx, "gone")
	wantKind(t, err, errs.ErrNotFound)
	if err := e.s.PurgeProject(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	for _, kv := range []struct {
		name string
		keys func() ([]string, error)
	}{
		{"projects", func() ([]string, error) { return liveKeys(ctx, e.s.projects, ">") }},
		{"keys", func() ([]string, error) { return liveKeys(ctx, e.s.keys, ">") }},
		{"sessions", func() ([]string, error) { return liveKeys(ctx, e.s.sessions, ">") }},
		{"states", func() ([]string, error) { return liveKeys(ctx, e.s.states, ">") }},
		{"bundles", func() ([]string, error) { return liveKeys(ctx, e.s.bundles, ">") }},
	} {
		keys, err := kv.keys()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if strings.Contains(k, "gone") {
				t.Errorf("%s still holds %s", kv.name, k)
			}
		}
		if kv.name != "states" && len(keys) == 0 {
			t.Errorf("%s: the other project's records went too", kv.name)
		}
	}
	infos, err := e.s.objects.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || !strings.HasPrefix(infos[0].Name, "kept.") {
		t.Errorf("objects left: %v", infos)
	}
}
