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
func (bc *Context) Capture(ctx context.Context, visited []string) (*latchkeyv1.StorageState, error) {
	// The cookies (from the browser) and the shown origin's web storage (from the
	// tab) are read at once: two round trips to different targets, one wait.
	type cookies struct {
		res storage.GetCookiesResult
		err error
	}
	got := make(chan cookies, 1)
	go func() {
		res, err := chromedp.CallBrowser(ctx, storage.GetCookies, storage.GetCookiesParams{BrowserContextID: bc.bcID})
		got <- cookies{res, err}
	}()
	// Read the origin the tab shows first, in one call, so most captures load no
	// document.
	here, _ := chromedp.Run(ctx, chromedp.Evaluate[originSnapshot](readOriginScript, chromedp.EvalAwaitPromise))
	c := <-got
	if c.err != nil {
		return nil, fmt.Errorf("reading cookies: %w", c.err)
	}
	st := &latchkeyv1.StorageState{Cookies: CookiesFromCDP(c.res.Cookies)}
	var err error
	for _, o := range visited {
		bc.storageOrigins[o] = true
	}
	origins := make([]string, 0, len(bc.storageOrigins))
	for o := range bc.storageOrigins {
		origins = append(origins, o)
	}
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
		if o != cur || here.Local == nil {
			if snap, err = bc.readOrigin(ctx, o); err != nil {
				return nil, err
			}
		}
		snap.Origin = o
		os := snapshotFromJS(snap)
		if snap.Error != "" {
			// IndexedDB could not be read: keep what the jar last held rather than
			// write back a state that looks as if the site deleted its databases.
			os.IndexedDb = indexedDBOf(bc.State, o)
		}
		if len(os.LocalStorage)+len(os.SessionStorage)+len(os.IndexedDb) > 0 {
			st.Origins = append(st.Origins, os)
		}
	}
	Normalize(st)
	return st, nil
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
