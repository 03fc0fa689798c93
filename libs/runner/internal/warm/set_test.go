package warm

import (
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
	w := NewSet(Limits{Max: 10, Memory: 3 * 67 << 20, PerContext: 67 << 20, Idle: time.Minute},
		func(c *fakeContext) { closed = append(closed, c.session) }, nil)
	w.now = func() time.Time { return now }
	ctxFor := func(s string) *fakeContext { return &fakeContext{session: s} }
	for _, s := range []string{"p/a", "p/b", "p/c"} {
		w.Put(ctxFor(s))
		now = now.Add(time.Second)
	}
	if _, ok := w.Take("p/d", "none"); ok {
		t.Fatal("a session got another session's context")
	}
	if got, ok := w.Take("p/a", "none"); !ok || got.session != "p/a" {
		t.Fatalf("p/a got %v", got)
	} else {
		w.Put(got) // a is now the most recently used
	}
	now = now.Add(time.Second)
	w.Put(ctxFor("p/d")) // over the budget of 3: b, the least recently used, goes
	if !slices.Equal(closed, []string{"p/b"}) || w.Len() != 3 {
		t.Fatalf("closed %v, %d idle; want p/b closed and 3 idle", closed, w.Len())
	}
	if _, ok := w.Take("p/c", "http://proxy"); ok || !slices.Contains(closed, "p/c") {
		t.Error("a context was lent with another proxy than its own")
	}
	w.Put(ctxFor("p/a")) // a second context of a replaces the first
	if w.Len() != 2 || closed[len(closed)-1] != "p/a" {
		t.Errorf("after a second context of p/a: %d idle, closed %v", w.Len(), closed)
	}
	now = now.Add(2 * time.Minute)
	w.Reap()
	if w.Len() != 0 {
		t.Errorf("%d idle contexts after their idle time", w.Len())
	}
}

// TestWarmSetKeepsSeveralPerSession: a session keeps up to perSession idle contexts,
// so Runs of one session that ran at once all find a warm one next time; the most
// recently used is lent first and the oldest goes when a third comes back.
func TestWarmSetKeepsSeveralPerSession(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	var closed []*fakeContext
	var events []string
	w := NewSet(Limits{Max: 10, PerSession: 2, Idle: time.Minute},
		func(c *fakeContext) { closed = append(closed, c) },
		func(s string, idle bool) { events = append(events, fmt.Sprintf("%s=%v", s, idle)) })
	w.now = func() time.Time { return now }
	ctxFor := func() *fakeContext { return &fakeContext{session: "p/a"} }
	one, two, three := ctxFor(), ctxFor(), ctxFor()
	for _, bc := range []*fakeContext{one, two, three} {
		w.Put(bc)
		now = now.Add(time.Second)
	}
	if w.Len() != 2 || len(closed) != 1 || closed[0] != one {
		t.Fatalf("%d idle, closed %d; want 2 idle and the oldest closed", w.Len(), len(closed))
	}
	if got, _ := w.Take("p/a", "none"); got != three {
		t.Error("take did not lend the most recently used context")
	}
	if got, _ := w.Take("p/a", "none"); got != two {
		t.Error("the second take did not lend the other idle context")
	}
	if _, ok := w.Take("p/a", "none"); ok {
		t.Error("a third take found a context that was closed")
	}
	if want := []string{"p/a=true", "p/a=false"}; !slices.Equal(events, want) {
		t.Errorf("idle notifications %v, want %v (first gained, last lost)", events, want)
	}
}

// fakeContext is a browser context as the set sees it: alive, without a proxy.
type fakeContext struct{ session string }

func (c *fakeContext) Session() string { return c.session }
func (c *fakeContext) Pin() string     { return "none" }
func (c *fakeContext) Usable() bool    { return true }
