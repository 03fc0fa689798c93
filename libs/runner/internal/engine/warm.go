package engine

import (
	"slices"
	"sync"
	"time"
)

// warmSet keeps idle browser contexts bound to their sessions between tasks, bounded
// by count, by a memory budget and by an idle timeout, evicting the least recently
// used first. A session may keep up to perSession idle contexts (as many of its tasks
// as run here at once), so concurrent Runs of one session all find a warm context. A
// context taken from the set is lent to its own session only.
type warmSet struct {
	mu sync.Mutex
	// idle maps a session key to its idle contexts, least recently used first.
	idle       map[string][]*bctx
	count      int
	max        int
	perSession int
	budget     int64
	perCtx     int64
	idleAfter  time.Duration
	closeFn    func(*bctx)
	now        func() time.Time
	// onIdle is told when a session gains its first (true) or loses its last (false)
	// idle context; it is called without the lock held.
	onIdle func(session string, idle bool)
}

// has reports whether session has an idle context here.
func (w *warmSet) has(session string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.idle[session]) > 0
}

func (w *warmSet) notify(session string, idle bool) {
	if w.onIdle != nil && session != "" {
		w.onIdle(session, idle)
	}
}

// limit is how many idle contexts fit: the count bound and the memory budget.
func (w *warmSet) limit() int {
	n := w.max
	if w.perCtx > 0 && w.budget > 0 {
		n = min(n, int(w.budget/w.perCtx))
	}
	return n
}

// take returns the session's most recently used idle context that is usable with
// proxy, removing it from the set; nil when there is none.
func (w *warmSet) take(session, proxy string) *bctx {
	if session == "" {
		return nil
	}
	for {
		w.mu.Lock()
		list := w.idle[session]
		if len(list) == 0 {
			w.mu.Unlock()
			return nil
		}
		bc := list[len(list)-1]
		w.removeLocked(session, len(list)-1)
		last := len(w.idle[session]) == 0
		w.mu.Unlock()
		if last {
			w.notify(session, false)
		}
		if bc.alive() && bc.proxy == proxy && !bc.b.draining {
			return bc
		}
		w.closeFn(bc)
	}
}

// put keeps bc idle for its session, evicting the session's oldest idle context
// beyond perSession and the least recently used contexts beyond the limit.
func (w *warmSet) put(bc *bctx) {
	if w.limit() < 1 || bc.session == "" || !bc.alive() || bc.b.draining {
		w.closeFn(bc)
		return
	}
	bc.lastUsed = w.now()
	var evict []*bctx
	w.mu.Lock()
	first := len(w.idle[bc.session]) == 0
	w.idle[bc.session] = append(w.idle[bc.session], bc)
	w.count++
	if n := len(w.idle[bc.session]); n > max(w.perSession, 1) {
		evict = append(evict, w.idle[bc.session][0])
		w.removeLocked(bc.session, 0)
	}
	for w.count > w.limit() {
		evict = append(evict, w.evictOldestLocked())
	}
	w.mu.Unlock()
	if first {
		w.notify(bc.session, true)
	}
	w.close(evict)
}

// removeLocked drops the session's i-th idle context from the set.
func (w *warmSet) removeLocked(session string, i int) {
	list := slices.Delete(w.idle[session], i, i+1)
	if len(list) == 0 {
		delete(w.idle, session)
	} else {
		w.idle[session] = list
	}
	w.count--
}

// close closes evicted contexts and tells which sessions lost their last one.
func (w *warmSet) close(evict []*bctx) {
	for _, e := range evict {
		if !w.has(e.session) {
			w.notify(e.session, false)
		}
		w.closeFn(e)
	}
}

// makeRoom evicts idle contexts until at most n remain, for a runner that needs a
// new context while many idle ones are open.
func (w *warmSet) makeRoom(n int) {
	var evict []*bctx
	w.mu.Lock()
	for w.count > max(n, 0) {
		evict = append(evict, w.evictOldestLocked())
	}
	w.mu.Unlock()
	w.close(evict)
}

// evictOldestLocked removes and returns the least recently used idle context; each
// session's list is oldest first, so it is the oldest of the lists' heads.
func (w *warmSet) evictOldestLocked() *bctx {
	var lru *bctx
	for _, list := range w.idle {
		if lru == nil || list[0].lastUsed.Before(lru.lastUsed) {
			lru = list[0]
		}
	}
	w.removeLocked(lru.session, 0)
	return lru
}

// removeIfLocked removes every idle context for which drop is true and returns them.
func (w *warmSet) removeIfLocked(drop func(*bctx) bool) []*bctx {
	var out []*bctx
	for s, list := range w.idle {
		for i := len(list) - 1; i >= 0; i-- {
			if drop(list[i]) {
				out = append(out, list[i])
				w.removeLocked(s, i)
				list = w.idle[s]
			}
		}
	}
	return out
}

// reap closes contexts idle for longer than idleAfter, dead ones, and those of a
// draining or crashed browser.
func (w *warmSet) reap() {
	cutoff := w.now().Add(-w.idleAfter)
	w.mu.Lock()
	evict := w.removeIfLocked(func(bc *bctx) bool { return bc.lastUsed.Before(cutoff) || !bc.alive() || bc.b.draining })
	w.mu.Unlock()
	w.close(evict)
}

// dropBrowser forgets the idle contexts of a crashed browser.
func (w *warmSet) dropBrowser(b *browserProc) {
	w.mu.Lock()
	evict := w.removeIfLocked(func(bc *bctx) bool { return bc.b == b })
	w.mu.Unlock()
	w.close(evict)
}

// len returns the number of idle contexts.
func (w *warmSet) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.count
}

// closeAll closes every idle context.
func (w *warmSet) closeAll() { w.makeRoom(0) }
