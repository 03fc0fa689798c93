package runner

import (
	"sync"
	"time"
)

// warmSet keeps idle browser contexts bound to their sessions between tasks, bounded
// by count, by a memory budget and by an idle timeout, evicting the least recently
// used first. A context taken from the set is lent to its own session only.
type warmSet struct {
	mu        sync.Mutex
	idle      map[string]*bctx // session key -> its idle context
	max       int
	budget    int64
	perCtx    int64
	idleAfter time.Duration
	closeFn   func(*bctx)
	now       func() time.Time
	// onIdle is told when a session gains (true) or loses (false) its idle context;
	// it is called without the lock held.
	onIdle func(session string, idle bool)
}

// has reports whether session has an idle context here.
func (w *warmSet) has(session string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.idle[session] != nil
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

// take returns the session's idle context if it is usable with proxy, removing it
// from the set; nil otherwise.
func (w *warmSet) take(session, proxy string) *bctx {
	if session == "" {
		return nil
	}
	w.mu.Lock()
	bc := w.idle[session]
	if bc != nil {
		delete(w.idle, session)
	}
	w.mu.Unlock()
	if bc == nil {
		return nil
	}
	w.notify(session, false)
	if !bc.alive() || bc.proxy != proxy || bc.b.draining {
		w.closeFn(bc)
		return nil
	}
	return bc
}

// put keeps bc idle for its session, replacing an older idle context of the same
// session, and evicts the least recently used contexts beyond the limit.
func (w *warmSet) put(bc *bctx) {
	if w.limit() < 1 || bc.session == "" || !bc.alive() || bc.b.draining {
		w.closeFn(bc)
		return
	}
	bc.lastUsed = w.now()
	var evict []*bctx
	w.mu.Lock()
	if old := w.idle[bc.session]; old != nil && old != bc {
		evict = append(evict, old)
	}
	w.idle[bc.session] = bc
	for len(w.idle) > w.limit() {
		lru := w.oldestLocked()
		delete(w.idle, lru.session)
		evict = append(evict, lru)
	}
	w.mu.Unlock()
	w.notify(bc.session, true)
	w.close(evict, bc.session)
}

// close closes evicted contexts and tells which sessions lost theirs (but keep).
func (w *warmSet) close(evict []*bctx, keep string) {
	for _, e := range evict {
		if e.session != keep {
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
	for len(w.idle) > max(n, 0) {
		lru := w.oldestLocked()
		delete(w.idle, lru.session)
		evict = append(evict, lru)
	}
	w.mu.Unlock()
	w.close(evict, "")
}

func (w *warmSet) oldestLocked() *bctx {
	var lru *bctx
	for _, bc := range w.idle {
		if lru == nil || bc.lastUsed.Before(lru.lastUsed) {
			lru = bc
		}
	}
	return lru
}

// reap closes contexts idle for longer than idleAfter, dead ones, and those of a
// draining or crashed browser.
func (w *warmSet) reap() {
	cutoff := w.now().Add(-w.idleAfter)
	var evict []*bctx
	w.mu.Lock()
	for s, bc := range w.idle {
		if bc.lastUsed.Before(cutoff) || !bc.alive() || bc.b.draining {
			delete(w.idle, s)
			evict = append(evict, bc)
		}
	}
	w.mu.Unlock()
	w.close(evict, "")
}

// dropBrowser forgets the idle contexts of a crashed browser.
func (w *warmSet) dropBrowser(b *browserProc) {
	var evict []*bctx
	w.mu.Lock()
	for s, bc := range w.idle {
		if bc.b == b {
			delete(w.idle, s)
			evict = append(evict, bc)
		}
	}
	w.mu.Unlock()
	w.close(evict, "")
}

// len returns the number of idle contexts.
func (w *warmSet) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.idle)
}

// closeAll closes every idle context.
func (w *warmSet) closeAll() { w.makeRoom(0) }
