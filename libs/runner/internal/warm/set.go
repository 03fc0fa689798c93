// Package warm keeps a runner's browser contexts warm for their sessions: Set holds
// the idle ones between a session's tasks, and Handoff lets a runner that takes a task
// of a session whose warm context idles on another runner hand the task over to it
// (lk.runner.<pool>.warm.<session digest>). It knows browser contexts only through
// the small Context interface.
package warm

import (
	"slices"
	"sync"
	"time"
)

// Context is what the set needs of a browser context.
type Context interface {
	comparable
	// Session is the session the context belongs to; "" for none.
	Session() string
	// Pin names what the context is pinned to (its proxy and browser identity): a
	// context is lent only to a task with the same pin.
	Pin() string
	// Usable reports whether the context can serve another task (it and its browser
	// run, and the browser is not draining).
	Usable() bool
}

// Limits bound a Set.
type Limits struct {
	// Max bounds the idle contexts.
	Max int
	// PerSession bounds the idle contexts of one session (at least 1).
	PerSession int
	// Memory is the budget of idle contexts, counted at PerContext each; 0: none.
	Memory, PerContext int64
	// Idle closes a context unused for this long.
	Idle time.Duration
}

// Set keeps idle browser contexts bound to their sessions between tasks, bounded by
// count, by a memory budget and by an idle timeout, evicting the least recently used
// first. A session may keep up to PerSession idle contexts (as many of its tasks as
// run here at once), so concurrent Runs of one session all find a warm context. A
// context taken from the set is lent to its own session only.
type Set[C Context] struct {
	lim     Limits
	closeFn func(C)
	now     func() time.Time
	// onIdle is told when a session gains its first (true) or loses its last (false)
	// idle context; it is called without the lock held.
	onIdle func(session string, idle bool)

	mu sync.Mutex
	// idle maps a session key to its idle contexts, least recently used first.
	idle  map[string][]entry[C]
	count int
}

// entry is an idle context and when it was last put back.
type entry[C Context] struct {
	c        C
	lastUsed time.Time
}

// NewSet returns an empty set that closes the contexts it evicts with closeFn and
// tells onIdle (if not nil) when a session gains its first or loses its last idle
// context.
func NewSet[C Context](lim Limits, closeFn func(C), onIdle func(session string, idle bool)) *Set[C] {
	return &Set[C]{lim: lim, closeFn: closeFn, onIdle: onIdle, now: time.Now, idle: map[string][]entry[C]{}}
}

// Has reports whether session has an idle context here.
func (w *Set[C]) Has(session string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.idle[session]) > 0
}

func (w *Set[C]) notify(session string, idle bool) {
	if w.onIdle != nil && session != "" {
		w.onIdle(session, idle)
	}
}

// limit is how many idle contexts fit: the count bound and the memory budget.
func (w *Set[C]) limit() int {
	n := w.lim.Max
	if w.lim.PerContext > 0 && w.lim.Memory > 0 {
		n = min(n, int(w.lim.Memory/w.lim.PerContext))
	}
	return n
}

// Take returns the session's most recently used idle context that is usable with
// proxy, removing it from the set; false when there is none.
func (w *Set[C]) Take(session, pin string) (C, bool) {
	var none C
	if session == "" {
		return none, false
	}
	for {
		w.mu.Lock()
		list := w.idle[session]
		if len(list) == 0 {
			w.mu.Unlock()
			return none, false
		}
		c := list[len(list)-1].c
		w.removeLocked(session, len(list)-1)
		last := len(w.idle[session]) == 0
		w.mu.Unlock()
		if last {
			w.notify(session, false)
		}
		if c.Usable() && c.Pin() == pin {
			return c, true
		}
		w.closeFn(c)
	}
}

// Put keeps c idle for its session, evicting the session's oldest idle context
// beyond PerSession and the least recently used contexts beyond the limit.
func (w *Set[C]) Put(c C) {
	session := c.Session()
	if w.limit() < 1 || session == "" || !c.Usable() {
		w.closeFn(c)
		return
	}
	var evict []C
	w.mu.Lock()
	first := len(w.idle[session]) == 0
	w.idle[session] = append(w.idle[session], entry[C]{c: c, lastUsed: w.now()})
	w.count++
	if n := len(w.idle[session]); n > max(w.lim.PerSession, 1) {
		evict = append(evict, w.idle[session][0].c)
		w.removeLocked(session, 0)
	}
	for w.count > w.limit() {
		evict = append(evict, w.evictOldestLocked())
	}
	w.mu.Unlock()
	if first {
		w.notify(session, true)
	}
	w.close(evict)
}

// removeLocked drops the session's i-th idle context from the set.
func (w *Set[C]) removeLocked(session string, i int) {
	list := slices.Delete(w.idle[session], i, i+1)
	if len(list) == 0 {
		delete(w.idle, session)
	} else {
		w.idle[session] = list
	}
	w.count--
}

// close closes evicted contexts and tells which sessions lost their last one.
func (w *Set[C]) close(evict []C) {
	for _, c := range evict {
		if !w.Has(c.Session()) {
			w.notify(c.Session(), false)
		}
		w.closeFn(c)
	}
}

// evictOldestLocked removes and returns the least recently used idle context; each
// session's list is oldest first, so it is the oldest of the lists' heads.
func (w *Set[C]) evictOldestLocked() C {
	var lru *entry[C]
	var session string
	for s, list := range w.idle {
		if lru == nil || list[0].lastUsed.Before(lru.lastUsed) {
			lru, session = &list[0], s
		}
	}
	c := lru.c
	w.removeLocked(session, 0)
	return c
}

// removeIfLocked removes every idle context for which drop is true and returns them.
func (w *Set[C]) removeIfLocked(drop func(entry[C]) bool) []C {
	var out []C
	for s, list := range w.idle {
		for i := len(list) - 1; i >= 0; i-- {
			if drop(list[i]) {
				out = append(out, list[i].c)
				w.removeLocked(s, i)
				list = w.idle[s]
			}
		}
	}
	return out
}

// Reap closes contexts idle for longer than Limits.Idle and those no longer usable
// (dead, or of a draining or crashed browser).
func (w *Set[C]) Reap() {
	cutoff := w.now().Add(-w.lim.Idle)
	w.mu.Lock()
	evict := w.removeIfLocked(func(e entry[C]) bool { return e.lastUsed.Before(cutoff) || !e.c.Usable() })
	w.mu.Unlock()
	w.close(evict)
}

// Drop closes the idle contexts for which match is true: those of a crashed browser.
func (w *Set[C]) Drop(match func(C) bool) {
	w.mu.Lock()
	evict := w.removeIfLocked(func(e entry[C]) bool { return match(e.c) })
	w.mu.Unlock()
	w.close(evict)
}

// Len returns the number of idle contexts.
func (w *Set[C]) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.count
}

// CloseAll closes every idle context.
func (w *Set[C]) CloseAll() {
	var evict []C
	w.mu.Lock()
	for w.count > 0 {
		evict = append(evict, w.evictOldestLocked())
	}
	w.mu.Unlock()
	w.close(evict)
}
