package chrome

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// Restore puts st into the context: cookies (HttpOnly and session cookies too) through
// the Storage domain, and each origin's localStorage, sessionStorage (into this tab)
// and IndexedDB written in an empty synthetic document of that origin, before any page
// of the site runs a script. With clear, what
// the context held before is removed first (a warm context taking a newer revision).
func (bc *Context) Restore(ctx context.Context, st *latchkeyv1.StorageState, clear bool) error {
	if clear {
		if _, err := chromedp.CallBrowser(bc.tab, storage.ClearCookies, storage.ClearCookiesParams{BrowserContextID: bc.bcID}); err != nil {
			return fmt.Errorf("clearing cookies: %w", err)
		}
	}
	if cookies := CookieParams(st.GetCookies()); len(cookies) > 0 {
		if _, err := chromedp.CallBrowser(ctx, storage.SetCookies, storage.SetCookiesParams{BrowserContextID: bc.bcID, Cookies: cookies}); err != nil {
			return fmt.Errorf("restoring cookies: %w", err)
		}
	}
	want := map[string]*latchkeyv1.OriginStorage{}
	for _, o := range st.GetOrigins() {
		if len(o.GetLocalStorage())+len(o.GetSessionStorage())+len(o.GetIndexedDb()) > 0 {
			want[o.GetOrigin()] = o
		}
	}
	origins := make([]string, 0, len(want)+len(bc.storageOrigins))
	for o := range want {
		origins = append(origins, o)
	}
	if clear {
		for o := range bc.storageOrigins {
			if _, ok := want[o]; !ok {
				origins = append(origins, o)
			}
		}
	}
	slices.Sort(origins)
	for _, o := range origins {
		// Read at the next capture: a database another tab holds open is not
		// replaced, so the jar's state may not be what the origin holds.
		bc.Jar.noteIndexedDBChange(o)
		if err := bc.writeOrigin(ctx, o, want[o]); err != nil {
			return err
		}
	}
	if clear {
		bc.storageOrigins = map[string]bool{}
	}
	for o := range want {
		bc.storageOrigins[o] = true
	}
	return nil
}

// OnOrigin makes sure the tab shows a document of origin, loading the runner's empty
// synthetic document (answered by the runner, never by the site) when it does not.
func (bc *Context) OnOrigin(ctx context.Context, origin string) error {
	bc.mu.Lock()
	shown := bc.shown
	bc.mu.Unlock()
	if shown == origin {
		return nil
	}
	if !bc.intercepting {
		if err := interceptSynthetic(ctx, "*"+SyntheticPath, false); err != nil {
			return err
		}
		defer func() { _, _ = chromedp.Call(bc.tab, fetch.Disable, cdp.Empty{}) }()
	}
	return chromedp.Do(ctx, chromedp.Navigate(origin+SyntheticPath))
}

// CookieParams converts cookies for Storage.setCookies. A host-only cookie (a domain
// without a leading dot) is set through a URL, so it stays host-only; a domain cookie
// keeps its domain. Expired cookies are left out.
func CookieParams(cs []*latchkeyv1.Cookie) []*network.CookieParam {
	now := float64(time.Now().Unix())
	out := make([]*network.CookieParam, 0, len(cs))
	for _, c := range cs {
		if c.GetExpires() > 0 && c.GetExpires() < now {
			continue
		}
		p := &network.CookieParam{
			Name: c.GetName(), Value: c.GetValue(), Path: c.GetPath(),
			Secure: c.GetSecure(), HTTPOnly: c.GetHttpOnly(), SameSite: network.CookieSameSite(c.GetSameSite()),
		}
		if c.GetExpires() > 0 {
			p.Expires = cdp.TimeSinceEpoch(c.GetExpires())
		}
		if strings.HasPrefix(c.GetDomain(), ".") {
			p.Domain = c.GetDomain()
		} else {
			scheme := "http://"
			if c.GetSecure() {
				scheme = "https://"
			}
			p.URL = scheme + c.GetDomain() + c.GetPath()
		}
		out = append(out, p)
	}
	return out
}
