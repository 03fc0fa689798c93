package chrome

import (
	"context"
	"net/url"
	"strings"
	"sync"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// SyntheticPath is the path of the empty documents the runner loads (without touching
// the network) to read and write an origin's localStorage.
const SyntheticPath = "/__latchkey__"

// Proxy is the proxy pinned to a session's contexts.
type Proxy struct {
	Server   string
	Username string
	Password string
}

// String never shows the password.
func (p *Proxy) String() string {
	if p == nil {
		return "none"
	}
	return p.Server
}

// Pin is what a session pins its browser contexts to: its proxy, and how the browser
// presents itself (a User-Agent and a locale; empty: the default identity). Tabs and
// warm contexts are shared only between tasks with the same pin.
type Pin struct {
	Proxy     *Proxy
	UserAgent string
	Locale    string
}

// String names the pin, never the proxy's password.
func (p Pin) String() string {
	if p.UserAgent == "" && p.Locale == "" {
		return p.Proxy.String()
	}
	return p.Proxy.String() + "|" + p.Locale + "|" + p.UserAgent
}

// Jar is one isolated browser context (Target.createBrowserContext): the cookies and
// storage that its tabs share. It belongs to one session for its whole life (or to no
// session, for sessionless API tasks, and is then closed after its task). Concurrent
// tasks of a session on one runner run in tabs of the same jar, as a person's tabs
// share one profile: the site's rotating cookies never leave one jar behind another.
//
// Its state fields are the tasks' to keep; a task holds Lock while it restores into,
// captures from, or writes back the jar's state.
type Jar struct {
	bcID    cdp.BrowserContextID
	session string
	pin     Pin
	b       *Browser
	// owner is the first tab's chromedp context, which disposes of the browser
	// context when canceled: it is canceled after the jar's last tab closes.
	owner       context.CancelFunc
	ownerClosed bool // the owner tab was given back while other tabs stayed open
	tabs, busy  int  // open tabs, and tabs lent to tasks; guarded by the pool's mu

	mu sync.Mutex
	// What the jar holds: the state revision (0: unknown), the digest of the sealed
	// state its contents match, and the state itself.
	Revision int64
	Digest   [32]byte
	State    *latchkeyv1.StorageState
	// Stored is what the session's revision holds when it is not State: after this
	// jar's write-back merged in another writer's cookies, the jar keeps its own
	// (another jar's session token is not its own), and its next write-back merges
	// Stored back in, so the other writer's cookies are not dropped. Nil when the
	// revision holds State.
	Stored *latchkeyv1.StorageState
	// storageOrigins are the origins whose localStorage the jar was given or saw.
	storageOrigins map[string]bool

	// idbMu guards idbChanged. It is taken on the tabs' event loops, so it is never
	// held across a call to the browser.
	idbMu sync.Mutex
	// idbChanged are the origins whose IndexedDB changed since a capture last read it
	// (Storage.indexedDBListUpdated and indexedDBContentUpdated, heard by any tab).
	idbChanged map[string]bool
}

// noteIndexedDBChange records that origin's IndexedDB changed.
func (j *Jar) noteIndexedDBChange(origin string) {
	j.idbMu.Lock()
	j.idbChanged[origin] = true
	j.idbMu.Unlock()
}

// takeIndexedDBChange reports whether origin's IndexedDB changed since the last call
// for it, and forgets the change: a change heard from now on is one the caller's read
// may not have seen.
func (j *Jar) takeIndexedDBChange(origin string) bool {
	j.idbMu.Lock()
	defer j.idbMu.Unlock()
	changed := j.idbChanged[origin]
	delete(j.idbChanged, origin)
	return changed
}

// Lock serializes the state work of the tasks in the jar's tabs.
func (j *Jar) Lock() { j.mu.Lock() }

// Unlock ends Lock.
func (j *Jar) Unlock() { j.mu.Unlock() }

// Session is the session the jar belongs to ("<project>/<session>"), or "".
func (j *Jar) Session() string { return j.session }

// Pin names what the jar is pinned to (Pin.String), never a proxy password.
func (j *Jar) Pin() string { return j.pin.String() }

// Context is one tab of a Jar, lent to one task at a time. Its Jar's fields read as
// its own.
type Context struct {
	*Jar
	b      *Browser
	tab    context.Context
	cancel context.CancelFunc
	owner  bool // the jar's first tab

	mu      sync.Mutex
	visited map[string]bool // origins navigated to since reset
	// shown is the origin of the document the tab's main frame shows, as its last
	// navigation committed ("" before the first), so OnOrigin costs no round trip.
	shown string
	// idbTracked are the origins whose IndexedDB changes this tab hears of
	// (Storage.trackIndexedDBForStorageKey).
	idbTracked map[string]bool
	// intercepting: the Fetch domain pauses every request of the tab (a proxy that
	// needs credentials). Otherwise it is enabled only while a synthetic document
	// loads: an enabled Fetch domain slows every request the site's pages make
	// (measured: a same-origin fetch 7.7-8.2 ms without, 10.4-10.7 ms with a pattern
	// that matches nothing, headless Chromium 156, 2026-12-04).
	intercepting bool
}

// Tab is the chromedp context of the tab. It ends when the tab closes or its browser
// exits, never with a task.
func (bc *Context) Tab() context.Context { return bc.tab }

// Browser is the browser hosting the context.
func (bc *Context) Browser() *Browser { return bc.b }

// Usable reports whether the context can serve another task: it and its browser run,
// and the browser is not draining.
func (bc *Context) Usable() bool { return bc.Alive() && !bc.b.draining }

// BrowserGone reports whether the context's browser exited.
func (bc *Context) BrowserGone() bool { return bc.b.dead.Load() || !bc.b.alive() }

// Open reports whether the jar still has a tab.
func (j *Jar) Open(p *Pool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return j.tabs > 0
}

// Siblings is how many other tabs of its jar are lent to tasks now.
func (bc *Context) Siblings(p *Pool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bc.Jar.busy - 1
}

// NewContext opens a new jar (an isolated browser context) with one tab on a pool
// browser, intercepting the runner's synthetic documents and answering proxy
// credentials. The tab is lent: give it back with Return or CloseContext.
func (p *Pool) NewContext(ctx context.Context, session string, pin Pin) (*Context, error) {
	b, err := p.browser(ctx)
	if err != nil {
		return nil, err
	}
	var opts []chromedp.CreateBrowserContextOption
	if proxy := pin.Proxy; proxy != nil && proxy.Server != "" {
		opts = append(opts, func(params *target.CreateBrowserContextParams) {
			params.ProxyServer = proxy.Server
			// Chromium bypasses proxies for loopback by default; a pinned proxy is for
			// every request of the session.
			params.ProxyBypassList = "<-loopback>"
		})
	}
	tab, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext(opts...))
	jar := &Jar{b: b, session: session, pin: pin, owner: cancel, tabs: 1, busy: 1, storageOrigins: map[string]bool{}, idbChanged: map[string]bool{}}
	bc := &Context{Jar: jar, b: b, tab: tab, cancel: cancel, owner: true, visited: map[string]bool{}, idbTracked: map[string]bool{}}
	if err := bc.open(ctx, pin); err != nil {
		bc.cancel()
		p.released(b)
		if b.dead.Load() || !b.alive() {
			return nil, sdk.Infra("opening a browser context: %s exited", b)
		}
		return nil, sdk.Infra("opening a browser context: %w", err)
	}
	jar.bcID = chromedp.FromContext(tab).BrowserContextID
	return bc, nil
}

// SiblingTab opens a new tab in jar when it is still open with the same pin and its
// browser takes new tabs; false when it does not. A task of a session whose warm tabs
// are all busy takes one: it shares their cookies instead of restoring the state into
// a jar of its own.
func (p *Pool) SiblingTab(ctx context.Context, jar *Jar, pin Pin) (*Context, bool, error) {
	p.mu.Lock()
	if jar.tabs == 0 || jar.pin.String() != pin.String() || jar.b.draining || !jar.b.alive() || p.closed {
		p.mu.Unlock()
		return nil, false, nil
	}
	// Counted as a context of its browser from now, so the jar cannot close under it.
	p.count(jar.b)
	jar.tabs++
	jar.busy++
	p.mu.Unlock()
	tab, cancel := chromedp.NewContext(jar.b.ctx, chromedp.WithExistingBrowserContext(jar.bcID))
	bc := &Context{Jar: jar, b: jar.b, tab: tab, cancel: cancel, visited: map[string]bool{}, idbTracked: map[string]bool{}}
	if err := bc.open(ctx, jar.pin); err != nil {
		p.closeTab(bc)
		if jar.b.dead.Load() || !jar.b.alive() {
			return nil, false, sdk.Infra("opening a tab: %s exited", jar.b)
		}
		return nil, false, sdk.Infra("opening a tab: %w", err)
	}
	return bc, true, nil
}

// Lend counts bc, taken from the warm set, as lent to a task.
func (p *Pool) Lend(bc *Context) {
	p.mu.Lock()
	bc.Jar.busy++
	p.mu.Unlock()
}

// Return counts bc, kept warm, as no longer lent.
func (p *Pool) Return(bc *Context) {
	p.mu.Lock()
	bc.Jar.busy--
	p.mu.Unlock()
}

// open creates the target and sets up interception and origin tracking. The target is
// created under the long-lived tab context, never under a task's, so a task deadline
// does not close it.
func (bc *Context) open(ctx context.Context, pin Pin) error {
	done := make(chan error, 1)
	go func() { done <- chromedp.Do(bc.tab) }()
	select {
	case err := <-done:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := bc.b.identity.apply(bc.tab, pin); err != nil {
		return err
	}
	if err := chromedp.Listen(bc.tab, bc.onEvent); err != nil {
		return err
	}
	proxy := pin.Proxy
	paused := chromedp.Events(bc.tab, fetch.RequestPaused)
	go bc.serve(paused)
	if proxy == nil || proxy.Username == "" {
		return nil // Fetch is enabled while a synthetic document loads (OnOrigin)
	}
	go bc.answerAuth(chromedp.Events(bc.tab, fetch.AuthRequired), proxy)
	bc.intercepting = true
	return interceptSynthetic(bc.tab, "*", true)
}

// interceptSynthetic enables the Fetch domain for requests matching pattern, so serve
// answers the synthetic documents, and, with auth, the proxy's challenges.
func interceptSynthetic(ctx context.Context, pattern string, auth bool) error {
	_, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{
		Patterns:           []*fetch.RequestPattern{{URLPattern: pattern}},
		HandleAuthRequests: &auth,
	})
	return err
}

// serve answers intercepted requests: the runner's synthetic documents with an empty
// page, everything else (only with a proxy that needs credentials) continues.
func (bc *Context) serve(events func(func(fetch.EventRequestPaused, error) bool)) {
	for ev, err := range events {
		if err != nil {
			return
		}
		if u, perr := url.Parse(ev.Request.URL); perr == nil && u.Path == SyntheticPath {
			_, _ = chromedp.Call(bc.tab, fetch.FulfillRequest, fetch.FulfillRequestParams{
				RequestID: ev.RequestID, ResponseCode: 200,
				ResponseHeaders: []*fetch.HeaderEntry{{Name: "Content-Type", Value: "text/html; charset=utf-8"}, {Name: "Cache-Control", Value: "no-store"}},
				Body:            []byte(`<!doctype html><title></title><link rel="icon" href="data:,">`),
			})
			continue
		}
		_, _ = chromedp.Call(bc.tab, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
	}
}

// answerAuth gives the session's proxy credentials to the proxy's challenges only;
// a site's own challenge gets the browser's default answer.
func (bc *Context) answerAuth(events func(func(fetch.EventAuthRequired, error) bool), proxy *Proxy) {
	for ev, err := range events {
		if err != nil {
			return
		}
		resp := &fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseDefault}
		if ev.AuthChallenge != nil && ev.AuthChallenge.Source == fetch.AuthChallengeSourceProxy {
			resp = &fetch.AuthChallengeResponse{
				Response: fetch.AuthChallengeResponseResponseProvideCredentials,
				Username: proxy.Username, Password: proxy.Password,
			}
		}
		_, _ = chromedp.Call(bc.tab, fetch.ContinueWithAuth, fetch.ContinueWithAuthParams{RequestID: ev.RequestID, AuthChallengeResponse: resp})
	}
}

// onEvent records the origins the tab's frames navigate to, and the IndexedDB changes
// of the origins it tracks. It runs on the tab's message loop: it must return fast.
func (bc *Context) onEvent(ev any) {
	var nav *page.EventFrameNavigated
	switch e := ev.(type) {
	case *storage.EventIndexedDBListUpdated:
		bc.Jar.noteIndexedDBChange(storageKeyOrigin(e.Origin, e.StorageKey))
		return
	case *storage.EventIndexedDBContentUpdated:
		bc.Jar.noteIndexedDBChange(storageKeyOrigin(e.Origin, e.StorageKey))
		return
	case *page.EventFrameNavigated:
		nav = e
	}
	if nav == nil || nav.Frame == nil {
		return
	}
	o := OriginOf(nav.Frame.URL)
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if nav.Frame.ParentID == "" {
		bc.shown = o
	}
	if o != "" && !strings.HasSuffix(nav.Frame.URL, SyntheticPath) {
		bc.visited[o] = true
	}
}

// storageKeyOrigin is the origin of a first-party storage key ("https://a.example/"),
// or origin when the event names one.
func storageKeyOrigin(origin, key string) string {
	if origin != "" {
		return origin
	}
	return strings.TrimSuffix(key, "/")
}

// Visit records an origin the task reached other than by navigating (a request step).
func (bc *Context) Visit(origin string) {
	bc.mu.Lock()
	bc.visited[origin] = true
	bc.mu.Unlock()
}

// TakeVisited returns the origins visited since the last call and forgets them.
func (bc *Context) TakeVisited() []string {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	out := make([]string, 0, len(bc.visited))
	for o := range bc.visited {
		out = append(out, o)
	}
	bc.visited = map[string]bool{}
	return out
}

// Alive reports whether the context's browser and tab still run.
func (bc *Context) Alive() bool { return bc.tab.Err() == nil && bc.b.alive() }

// CloseContext closes a lent tab, in the background; the jar's browser context is
// disposed of with its last tab.
func (p *Pool) CloseContext(bc *Context) {
	p.mu.Lock()
	bc.Jar.busy--
	p.mu.Unlock()
	p.closeTab(bc)
}

// CloseIdle closes a tab that is not lent (one the warm set evicts).
func (p *Pool) CloseIdle(bc *Context) { p.closeTab(bc) }

// closeTab closes bc's tab and, with the jar's last tab, the jar. The owner tab stays
// open while other tabs do: canceling it disposes of the whole browser context.
func (p *Pool) closeTab(bc *Context) {
	jar := bc.Jar
	p.mu.Lock()
	jar.tabs--
	last := jar.tabs == 0
	cancelOwner := last && (bc.owner || jar.ownerClosed)
	keepOwner := bc.owner && !last
	if keepOwner {
		jar.ownerClosed = true
	}
	p.mu.Unlock()
	p.bg.Go(func() {
		switch {
		case keepOwner:
		case bc.owner:
			bc.cancel()
		default:
			bc.cancel()
			if cancelOwner {
				jar.owner()
			}
		}
		p.released(bc.b)
	})
}

// OriginOf returns scheme://host[:port] of an http(s) URL, or "".
func OriginOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}
