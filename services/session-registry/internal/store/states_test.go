package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/cache"
	"github.com/latchkey/latchkey/libs/errs"
	eventsv1 "github.com/latchkey/latchkey/libs/gen/latchkey/events/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/logging"
	"github.com/latchkey/latchkey/libs/storagestate"
	"github.com/latchkey/latchkey/libs/testkit"
)

func TestStorageStateRevisions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{KeepRevisions: 2})
	ctx := t.Context()
	e.project(t, "acme")
	e.session(t, "acme", "s1", credentials)
	_, _, err := e.s.GetState(ctx, "acme", "s1", 0)
	wantKind(t, err, errs.ErrNotFound)

	for i := int64(1); i <= 4; i++ {
		rev, err := e.s.PutState(ctx, "acme", "s1", fmt.Appendf(nil, "sealed-%d", i), PutOptions{Base: i - 1, KnownGood: i == 1})
		if err != nil || rev != i {
			t.Fatalf("put %d = %d, %v", i, rev, err)
		}
	}
	ct, rev, err := e.s.GetState(ctx, "acme", "s1", 0)
	if err != nil || rev != 4 || string(ct) != "sealed-4" {
		t.Fatalf("newest = %q %d %v", ct, rev, err)
	}
	for rev, want := range map[int64]string{1: "sealed-1", 3: "sealed-3", 4: "sealed-4"} {
		if ct, _, err := e.s.GetState(ctx, "acme", "s1", rev); err != nil || string(ct) != want {
			t.Errorf("revision %d = %q, %v", rev, ct, err)
		}
	}
	// Revision 2 is neither among the newest two nor known-good: pruned, blob too.
	_, _, err = e.s.GetState(ctx, "acme", "s1", 2)
	wantKind(t, err, errs.ErrNotFound)
	if keys, _ := liveKeys(ctx, e.s.states, "acme.s1.*"); len(keys) != 3 {
		t.Errorf("LK_STATES holds %v, want three blobs", keys)
	}

	_, err = e.s.PutState(ctx, "acme", "s1", []byte("late"), PutOptions{Base: 3})
	wantKind(t, err, errs.ErrStale)
	_, err = e.s.PutState(ctx, "acme", "s1", nil, PutOptions{Base: 4})
	wantKind(t, err, errs.ErrInvalid)
	_, err = e.s.PutState(ctx, "acme", "s1", make([]byte, MaxCiphertextBytes+1), PutOptions{Base: 4})
	wantKind(t, err, errs.ErrTooLarge)
	_, err = e.s.PutState(ctx, "other", "s1", []byte("x"), PutOptions{})
	wantKind(t, err, errs.ErrNotFound)
	_, _, err = e.s.GetState(ctx, "acme", "s1", -1)
	wantKind(t, err, errs.ErrInvalid)
	if ct, rev, _ := e.s.GetState(ctx, "acme", "s1", 0); rev != 4 || string(ct) != "sealed-4" {
		t.Errorf("refused writes changed the newest state: %q %d", ct, rev)
	}
}

func TestLargeStatesGoToTheObjectStore(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{InlineMaxBytes: 1024})
	ctx := t.Context()
	e.project(t, "acme")
	e.session(t, "acme", "big", credentials)
	large := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB: more than a KV value may hold
	if _, err := e.s.PutState(ctx, "acme", "big", large, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.PutState(ctx, "acme", "big", []byte("small"), PutOptions{Base: 1}); err != nil {
		t.Fatal(err)
	}
	ct, _, err := e.s.GetState(ctx, "acme", "big", 1)
	if err != nil || !bytes.Equal(ct, large) {
		t.Fatalf("large state: %d bytes, %v", len(ct), err)
	}
	if infos, _ := e.s.objects.List(ctx); len(infos) != 1 {
		t.Errorf("object store holds %d objects, want 1", len(infos))
	}
	if _, err := e.s.DeleteSession(ctx, "acme", "big"); err != nil {
		t.Fatal(err)
	}
	if infos, err := e.s.objects.List(ctx); len(infos) != 0 {
		t.Errorf("deleting the session left %d objects (%v)", len(infos), err)
	}
}

func TestImportMakesSessionReady(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{})
	ctx := t.Context()
	e.project(t, "acme")
	e.session(t, "acme", "rec", recorder)
	events := e.events(t, "acme", "rec")
	if _, err := e.s.PutState(ctx, "acme", "rec", []byte("sealed"), PutOptions{Ready: true}); err != nil {
		t.Fatal(err)
	}
	sess, _ := e.s.GetSession(ctx, "acme", "rec")
	if sess.Rec.GetSession().GetState() != ready || sess.Rec.GetSession().GetStateRevision() != 1 {
		t.Fatalf("after import: %v", sess.Rec.GetSession())
	}
	for _, want := range []eventsv1.SessionEventType{eventsv1.SessionEventType_SESSION_EVENT_TYPE_STATE_WRITTEN, eventsv1.SessionEventType_SESSION_EVENT_TYPE_READY} {
		if ev, _ := nextEvent(t, events); ev.GetType() != want || ev.GetStateRevision() != 1 {
			t.Errorf("event %v, want %v", ev, want)
		}
	}
}

// TestRacingWriteBacksMergeWithoutLosingACookie plays many runners writing back at
// once through PutState over real JetStream: each captured its own new cookie from
// the same base; on ErrStale it reads the newest state, merges cookie-wise with
// libs/storagestate and retries. Every cookie survives. (The store holds ciphertext
// it never opens; here the "sealed" bytes are the plaintext encoding.)
func TestRacingWriteBacksMergeWithoutLosingACookie(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{})
	ctx := t.Context()
	e.project(t, "acme")
	e.session(t, "acme", "shared", credentials)
	first := &latchkeyv1.StorageState{Cookies: []*latchkeyv1.Cookie{{Name: "sid", Value: "v0", Domain: "portal.example", Path: "/", Expires: 100}}}
	b, _ := storagestate.Marshal(first)
	if _, err := e.s.PutState(ctx, "acme", "shared", b, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	const writers = 10
	// Every writer captured its state from revision 1 before any wrote back.
	base, baseRev := readState(t, e.s)
	conflicts := make([]int, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			conflicts[w] = writeBack(ctx, t, e.s, w, base, baseRev)
		})
	}
	wg.Wait()
	ct, rev, err := e.s.GetState(ctx, "acme", "shared", 0)
	if err != nil {
		t.Fatal(err)
	}
	final, err := storagestate.Unmarshal(ct)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, c := range final.GetCookies() {
		names[c.GetName()] = c.GetValue()
	}
	for w := range writers {
		if names[fmt.Sprintf("w%d", w)] != "mine" {
			t.Errorf("writer %d's cookie was lost: %v", w, names)
		}
	}
	total := 0
	for _, c := range conflicts {
		total += c
	}
	if rev != writers+1 || total < writers-1 || names["sid"] != "v9" {
		t.Errorf("revision %d after %d writers with %d conflicts, sid %q", rev, writers, total, names["sid"])
	}
}

func readState(t *testing.T, s *Store) (*latchkeyv1.StorageState, int64) {
	t.Helper()
	ct, rev, err := s.GetState(t.Context(), "acme", "shared", 0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := storagestate.Unmarshal(ct)
	if err != nil {
		t.Fatal(err)
	}
	return st, rev
}

// writeBack is one runner's write-back: capture = base + a cookie of its own and a
// refreshed sid; CAS; on conflict merge and retry. It returns the conflicts it met.
func writeBack(ctx context.Context, t *testing.T, s *Store, w int, base *latchkeyv1.StorageState, baseRev int64) int {
	mine := proto.CloneOf(base)
	mine.Cookies[0].Value, mine.Cookies[0].Expires = fmt.Sprintf("v%d", w), float64(1000+w)
	mine.Cookies = append(mine.Cookies, &latchkeyv1.Cookie{Name: fmt.Sprintf("w%d", w), Value: "mine", Domain: "portal.example", Path: "/", Expires: -1})
	for conflicts := 0; ; conflicts++ {
		sealed, err := storagestate.Marshal(mine)
		if err != nil {
			t.Error(err)
			return conflicts
		}
		_, err = s.PutState(ctx, "acme", "shared", sealed, PutOptions{Base: baseRev})
		if err == nil {
			return conflicts
		}
		if !errors.Is(err, errs.ErrStale) {
			t.Error(err)
			return conflicts
		}
		ct, rev, err := s.GetState(ctx, "acme", "shared", 0)
		if err != nil {
			t.Error(err)
			return conflicts
		}
		current, _ := storagestate.Unmarshal(ct)
		mine = storagestate.Merge(base, current, mine)
		base, baseRev = current, rev
	}
}

// TestStatesServedWithRedisDown caches ciphertext in a real Redis, then kills Redis:
// reads and writes go on from JetStream.
func TestStatesServedWithRedisDown(t *testing.T) {
	t.Parallel()
	rs := testkit.Redis(t)
	c, err := cache.Open(t.Context(), cache.Config{URL: rs.URL(), Logger: logging.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e := newEnv(t, c, Options{})
	ctx := t.Context()
	e.project(t, "acme")
	e.session(t, "acme", "s1", credentials)
	if _, err := e.s.PutState(ctx, "acme", "s1", []byte("ciphertext-1"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// The cache holds the ciphertext, under a key naming no secret.
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	keys, err := rc.Keys(ctx, "*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("redis keys %v, %v", keys, err)
	}
	if v, _ := rc.Get(ctx, keys[0]).Result(); v != "ciphertext-1" {
		t.Fatalf("redis holds %q", v)
	}
	rc.Close()

	rs.Stop()
	ct, rev, err := e.s.GetState(ctx, "acme", "s1", 0)
	if err != nil || rev != 1 || string(ct) != "ciphertext-1" {
		t.Fatalf("with redis down: %q %d %v", ct, rev, err)
	}
	if rev, err := e.s.PutState(ctx, "acme", "s1", []byte("ciphertext-2"), PutOptions{Base: 1}); err != nil || rev != 2 {
		t.Fatalf("put with redis down: %d %v", rev, err)
	}
	if ct, _, err := e.s.GetState(ctx, "acme", "s1", 2); err != nil || string(ct) != "ciphertext-2" {
		t.Fatalf("read back with redis down: %q %v", ct, err)
	}
}

// TestRecreatedSessionNeverSeesOldState deletes a session and creates it again under
// the same id: the old state, cached or stored, is gone.
func TestRecreatedSessionNeverSeesOldState(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{})
	ctx := t.Context()
	e.project(t, "acme")
	e.session(t, "acme", "s1", credentials)
	if _, err := e.s.PutState(ctx, "acme", "s1", []byte("old"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.s.GetState(ctx, "acme", "s1", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.DeleteSession(ctx, "acme", "s1"); err != nil {
		t.Fatal(err)
	}
	e.session(t, "acme", "s1", credentials)
	_, _, err := e.s.GetState(ctx, "acme", "s1", 1)
	wantKind(t, err, errs.ErrNotFound)
	if _, err := e.s.PutState(ctx, "acme", "s1", []byte("new"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if ct, _, err := e.s.GetState(ctx, "acme", "s1", 1); err != nil || string(ct) != "new" {
		t.Fatalf("revision 1 of the new session = %q, %v", ct, err)
	}
}
