package interp

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// navGrace bounds the look for a navigation a click or key press started, when the
// page is too busy to answer sooner; a page that answers costs one round trip.
const navGrace = 100 * time.Millisecond

// settleJS is the look: one round trip to the page. Chromium requests the navigation
// a click or Enter starts (a link, a form submission, a location change in a handler
// or its microtasks) before it acknowledges the input, or at the latest before it
// answers the next command, and Listen sees the event before that answer. A task
// turn (setTimeout 0) would also catch navigations a handler defers to a timer, but
// after an input the page runs its rendering first: about 10 ms against 0.5 ms.
const settleJS = `0`

// navWatch follows the navigations of the tab's main frame from the moment it is
// made: whether one was requested or started, and whether it ended (committed, or
// stopped without a new document: a 204, a download, a cancel).
type navWatch struct {
	mainFrame cdp.FrameID
	mu        sync.Mutex
	started   bool // a navigation of the main frame was requested or started
	loading   bool // the main frame started loading after the watch began
	ended     bool
	committed bool
	done      chan struct{} // closed when ended
}

// watchNavigation starts watching the main frame of ctx's tab; the watch stops when
// ctx ends.
func watchNavigation(ctx context.Context) (*navWatch, error) {
	c := chromedp.FromContext(ctx)
	if c == nil || c.Target == nil {
		return nil, chromedp.ErrInvalidContext
	}
	// The main frame of a page target has the target's id.
	w := &navWatch{mainFrame: cdp.FrameID(c.Target.TargetID), done: make(chan struct{})}
	if err := chromedp.Listen(ctx, w.onEvent); err != nil {
		return nil, err
	}
	return w, nil
}

// onEvent runs on the tab's message loop: it only records.
func (w *navWatch) onEvent(ev any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return
	}
	switch e := ev.(type) {
	case *page.EventFrameRequestedNavigation:
		// A link to a new tab or a javascript: URL replaces nothing.
		if e.FrameID == w.mainFrame && e.Disposition == page.ClientNavigationDispositionCurrentTab && !strings.HasPrefix(e.URL, "javascript:") {
			w.started = true
		}
	case *page.EventFrameStartedNavigating:
		if e.FrameID == w.mainFrame {
			w.started = true
		}
	case *page.EventFrameStartedLoading:
		if e.FrameID == w.mainFrame {
			w.started, w.loading = true, true
		}
	case *page.EventFrameNavigated:
		if e.Frame != nil && e.Frame.ParentID == "" {
			w.started, w.committed = true, true
			w.end()
		}
	case *page.EventNavigatedWithinDocument:
		if e.FrameID == w.mainFrame {
			w.started, w.committed = true, true
			w.end()
		}
	case *page.EventFrameStoppedLoading:
		// Only a load that started after the action: an earlier one of the page
		// being left may stop before the new document commits.
		if e.FrameID == w.mainFrame && w.loading {
			w.end()
		}
	}
}

func (w *navWatch) end() {
	w.ended = true
	close(w.done)
}

func (w *navWatch) state() (started, ended, committed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.started, w.ended, w.committed
}

// actAndWait runs act (a click or a key press) and, unless the step says noWaitAfter,
// waits as Playwright does for a navigation of the main frame it started: a short
// look (settleJS, at most navGrace) for one to start, then until it commits or ends,
// within the step's timeout. So the next step never sees the document being left. A
// navigation the page starts later (after its own fetch, or from a timer) is not
// waited for: a recipe follows such a click with waitURL.
func (in *interp) actAndWait(ctx context.Context, noWait bool, act func(context.Context) error) error {
	if noWait {
		in.note = "did not wait for a navigation (noWaitAfter)"
		return act(ctx)
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	w, err := watchNavigation(wctx)
	if err != nil {
		return err
	}
	if err := act(ctx); err != nil {
		return err
	}
	looked := time.Now()
	if started, _, _ := w.state(); !started {
		gctx, cancel := context.WithTimeout(ctx, navGrace)
		// An error (the document went away, the page too busy) is an answer too.
		_, _ = chromedp.Run(gctx, chromedp.Evaluate[chromedp.Void](settleJS, chromedp.EvalAwaitPromise))
		cancel()
	}
	grace := time.Since(looked)
	started, _, _ := w.state()
	if !started {
		in.note = fmt.Sprintf("no navigation (looked for %s)", roundDuration(grace))
		return nil
	}
	select {
	case <-w.done:
	case <-ctx.Done():
		return &stepError{reason: reasonTimeout, outcome: outcomeInconclusive, msg: "it started a navigation that did not commit in time"}
	}
	if _, _, committed := w.state(); committed {
		in.note = fmt.Sprintf("navigated (committed after %s)", roundDuration(time.Since(looked)))
	} else {
		in.note = "started a navigation that ended without a new page"
	}
	return nil
}

// roundDuration keeps notes short: 1.234ms, 56ms, 1.2s.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d < 10*time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d < time.Second:
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}
