// Package chrome keeps the runner's Chromium processes and the isolated browser
// contexts on them: Pool starts browsers, opens a Context on the least loaded one,
// replaces a browser that crashed and recycles one that created too many contexts. A
// Context restores a storage state into itself (restore.go) and captures the state it
// holds (capture.go), tracking the origins its tab visits; state.go normalizes and
// compares states. It knows nothing of tasks or sessions beyond a context's session
// name.
package chrome

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/chromedp/chromedp"

	"github.com/latchkey/latchkey/libs/browser"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// errPoolClosed is returned for contexts asked of a stopped pool.
var errPoolClosed = errors.New("the browser pool is closed")

// Browser is one long-lived Chromium process hosting many browser contexts.
type Browser struct {
	id     int
	ctx    context.Context // the browser's first tab; ends when Chromium exits
	cancel context.CancelFunc
	pid    int
	// created and live count contexts; draining browsers take no new ones. Guarded by
	// pool.mu.
	created, live int
	draining      bool
	// closing is set when we close the browser on purpose; dead when it exited
	// without being asked.
	closing atomic.Bool
	dead    atomic.Bool
	// identity is how its contexts present themselves to sites (identity.go).
	identity identity
}

// alive reports whether the browser still runs.
func (b *Browser) alive() bool { return b.ctx.Err() == nil }

// Pool keeps a few Chromium processes running, starts contexts on the least loaded
// one, replaces a browser that crashed, and recycles a browser after it created
// recycleAfter contexts (Chromium grows with every context it ever made).
type Pool struct {
	// OnCrash, if set before Start, is told about a browser that died, so its warm
	// contexts are dropped.
	OnCrash func(*Browser)

	log          *slog.Logger
	alloc        context.Context
	cancelAlloc  context.CancelFunc
	size         int
	recycleAfter int

	mu       sync.Mutex
	browsers []*Browser
	nextID   int
	closed   bool
	// starting serializes browser starts, so two tasks do not both start one.
	starting sync.Mutex
	bg       sync.WaitGroup
}

// NewPool returns a pool of size browsers of the Chromium at execPath, each replaced
// after it created recycleAfter contexts (0: never). Start launches them.
func NewPool(execPath string, size, recycleAfter int, log *slog.Logger) *Pool {
	opts := append([]chromedp.ExecAllocatorOption{chromedp.ExecPath(execPath)}, browser.AllocatorOptions()...)
	alloc, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	return &Pool{log: log, alloc: alloc, cancelAlloc: cancel, size: size, recycleAfter: recycleAfter}
}

// Start launches the pool's browsers, so the first task does not pay for it.
func (p *Pool) Start(ctx context.Context) error {
	for range p.size {
		if _, err := p.startBrowser(ctx); err != nil {
			return err
		}
	}
	return nil
}

// startBrowser launches one Chromium and adds it to the pool.
func (p *Pool) startBrowser(ctx context.Context) (*Browser, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errPoolClosed
	}
	p.nextID++
	id := p.nextID
	p.mu.Unlock()

	first, cancel := chromedp.NewContext(p.alloc)
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(first) }()
	select {
	case err := <-started:
		if err != nil {
			cancel()
			return nil, sdk.Infra("starting chromium: %w", err)
		}
	case <-ctx.Done():
		cancel()
		return nil, ctx.Err()
	}
	b := &Browser{id: id, ctx: first, cancel: cancel}
	ident, err := readIdentity(first)
	if err != nil {
		cancel()
		return nil, sdk.Infra("reading chromium's user agent: %w", err)
	}
	b.identity = ident
	if proc := chromedp.FromContext(first).Browser.Process(); proc != nil {
		b.pid = proc.Pid
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		cancel()
		return nil, errPoolClosed
	}
	p.browsers = append(p.browsers, b)
	p.mu.Unlock()
	p.bg.Go(func() { p.watch(b) })
	p.log.Info("chromium started", "browser", id, "pid", b.pid)
	return b, nil
}

// watch notices a browser that exited without being asked and drops it.
func (p *Pool) watch(b *Browser) {
	<-b.ctx.Done()
	p.remove(b)
	if b.closing.Load() {
		return
	}
	b.dead.Store(true)
	p.log.Error("chromium exited unexpectedly; its tasks fail as transient and a new one takes over", "browser", b.id, "pid", b.pid)
	if p.OnCrash != nil {
		p.OnCrash(b)
	}
}

func (p *Pool) remove(b *Browser) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.browsers {
		if x == b {
			p.browsers = append(p.browsers[:i], p.browsers[i+1:]...)
			return
		}
	}
}

// pick returns the running, non-draining browser with the fewest live contexts, and
// counts a new context on it; nil when one must be started.
func (p *Pool) pick() (*Browser, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errPoolClosed
	}
	var best *Browser
	usable := 0
	for _, b := range p.browsers {
		if b.draining || !b.alive() {
			continue
		}
		usable++
		if best == nil || b.live < best.live {
			best = b
		}
	}
	if best == nil || usable < p.size && best.live > 0 {
		return nil, nil
	}
	p.count(best)
	return best, nil
}

// count records a new context on b; past recycleAfter the browser drains.
func (p *Pool) count(b *Browser) {
	b.created++
	b.live++
	if p.recycleAfter > 0 && b.created >= p.recycleAfter {
		b.draining = true
	}
}

// browser returns a browser for a new context, starting one if needed.
func (p *Pool) browser(ctx context.Context) (*Browser, error) {
	if b, err := p.pick(); b != nil || err != nil {
		return b, err
	}
	p.starting.Lock()
	defer p.starting.Unlock()
	if b, err := p.pick(); b != nil || err != nil {
		return b, err
	}
	b, err := p.startBrowser(ctx)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.count(b)
	p.mu.Unlock()
	return b, nil
}

// released records that a context of b closed; a drained browser with none left is
// closed.
func (p *Pool) released(b *Browser) {
	p.mu.Lock()
	b.live--
	done := b.draining && b.live <= 0
	p.mu.Unlock()
	if done && b.alive() {
		p.log.Info("recycling chromium", "browser", b.id, "contexts_created", b.created)
		p.closeBrowser(b)
	}
}

func (p *Pool) closeBrowser(b *Browser) {
	b.closing.Store(true)
	p.bg.Go(b.cancel)
}

// PIDs returns the process ids of the running browsers.
func (p *Pool) PIDs() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int
	for _, b := range p.browsers {
		out = append(out, b.pid)
	}
	return out
}

// Close stops every browser and waits for them.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	bs := append([]*Browser(nil), p.browsers...)
	p.mu.Unlock()
	for _, b := range bs {
		b.closing.Store(true)
		b.cancel()
	}
	p.bg.Wait()
	p.cancelAlloc()
}

// String names the browser in errors.
func (b *Browser) String() string { return fmt.Sprintf("chromium %d (pid %d)", b.id, b.pid) }
