package engine

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestWarmSetBounds: idle contexts are bounded by count and memory budget (least
// recently used out first), close after their idle time, and a session only ever gets
// its own context back.
func TestWarmSetBounds(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	var closed []string
	browser := &browserProc{ctx: context.Background()}
	w := &warmSet{idle: map[string][]*bctx{}, max: 10, budget: 3 * 67 << 20, perCtx: 67 << 20, idleAfter: time.Minute,
		closeFn: func(bc *bctx) { closed = append(closed, bc.session) }, now: func() time.Time { return now }}
	ctxFor := func(s string) *bctx { return &bctx{session: s, tab: context.Background(), b: browser, proxy: "none"} }
	for _, s := range []string{"p/a", "p/b", "p/c"} {
		w.put(ctxFor(s))
		now = now.Add(time.Second)
	}
	if got := w.take("p/d", "none"); got != nil {
		t.Fatal("a session got another session's context")
	}
	if got := w.take("p/a", "none"); got == nil || got.session != "p/a" {
		t.Fatalf("p/a got %v", got)
	} else {
		w.put(got) // a is now the most recently used
	}
	now = now.Add(time.Second)
	w.put(ctxFor("p/d")) // over the budget of 3: b, the least recently used, goes
	if !slices.Equal(closed, []string{"p/b"}) || w.len() != 3 {
		t.Fatalf("closed %v, %d idle; want p/b closed and 3 idle", closed, w.len())
	}
	if got := w.take("p/c", "http://proxy"); got != nil || !slices.Contains(closed, "p/c") {
		t.Error("a context was lent with another proxy than its own")
	}
	w.put(ctxFor("p/a")) // a second context of a replaces the first
	if w.len() != 2 || closed[len(closed)-1] != "p/a" {
		t.Errorf("after a second context of p/a: %d idle, closed %v", w.len(), closed)
	}
	now = now.Add(2 * time.Minute)
	w.reap()
	if w.len() != 0 {
		t.Errorf("%d idle contexts after their idle time", w.len())
	}
}

// TestWarmSetKeepsSeveralPerSession: a session keeps up to perSession idle contexts,
// so Runs of one session that ran at once all find a warm one next time; the most
// recently used is lent first and the oldest goes when a third comes back.
func TestWarmSetKeepsSeveralPerSession(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	var closed []*bctx
	var events []string
	browser := &browserProc{ctx: context.Background()}
	w := &warmSet{idle: map[string][]*bctx{}, max: 10, perSession: 2, idleAfter: time.Minute,
		closeFn: func(bc *bctx) { closed = append(closed, bc) }, now: func() time.Time { return now },
		onIdle: func(s string, idle bool) { events = append(events, fmt.Sprintf("%s=%v", s, idle)) }}
	ctxFor := func() *bctx { return &bctx{session: "p/a", tab: context.Background(), b: browser, proxy: "none"} }
	one, two, three := ctxFor(), ctxFor(), ctxFor()
	for _, bc := range []*bctx{one, two, three} {
		w.put(bc)
		now = now.Add(time.Second)
	}
	if w.len() != 2 || len(closed) != 1 || closed[0] != one {
		t.Fatalf("%d idle, closed %d; want 2 idle and the oldest closed", w.len(), len(closed))
	}
	if got := w.take("p/a", "none"); got != three {
		t.Error("take did not lend the most recently used context")
	}
	if got := w.take("p/a", "none"); got != two {
		t.Error("the second take did not lend the other idle context")
	}
	if got := w.take("p/a", "none"); got != nil {
		t.Error("a third take found a context that was closed")
	}
	if want := []string{"p/a=true", "p/a=false"}; !slices.Equal(events, want) {
		t.Errorf("idle notifications %v, want %v (first gained, last lost)", events, want)
	}
}
