package engine

import (
	"sync"
	"time"
)

// deadline cancels a task at its deadline; an ask pauses it while the context waits
// for an answer.
type deadline struct {
	mu     sync.Mutex
	at     time.Time
	left   time.Duration
	timer  *time.Timer
	expire func()
}

func newDeadline(at time.Time, expire func()) *deadline {
	d := &deadline{at: at, expire: expire}
	d.timer = time.AfterFunc(time.Until(at), expire)
	return d
}

func (d *deadline) pause() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer.Stop() {
		d.left = time.Until(d.at)
	}
}

func (d *deadline) resume() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.left > 0 {
		d.at = time.Now().Add(d.left)
		d.timer = time.AfterFunc(d.left, d.expire)
		d.left = 0
	}
}

func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.timer.Stop()
}
