package engine

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/storagestate"
)

// digestOf is the digest by which a context remembers which sealed state it holds.
func digestOf(ciphertext []byte) [32]byte { return sha256.Sum256(ciphertext) }

// restore puts st into the context: cookies (HttpOnly and session cookies too) through
// the Storage domain, and each origin's localStorage written in an empty synthetic
// document of that origin, before any page of the site runs a script. With clear, what
// the context held before is removed first (a warm context taking a newer revision).
func (bc *bctx) restore(ctx context.Context, st *latchkeyv1.StorageState, clear bool) error {
	if clear {
		if _, err := chromedp.CallBrowser(bc.tab, storage.ClearCookies, storage.ClearCookiesParams{BrowserContextID: bc.bcID}); err != nil {
			return fmt.Errorf("clearing cookies: %w", err)
		}
	}
	if cookies := toCookieParams(st.GetCookies()); len(cookies) > 0 {
		if _, err := chromedp.CallBrowser(ctx, storage.SetCookies, storage.SetCookiesParams{BrowserContextID: bc.bcID, Cookies: cookies}); err != nil {
			return fmt.Errorf("restoring cookies: %w", err)
		}
	}
	want := map[string][]*latchkeyv1.StorageItem{}
	for _, o := range st.GetOrigins() {
		if len(o.GetLocalStorage()) > 0 {
			want[o.GetOrigin()] = o.GetLocalStorage()
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
		if err := bc.writeLocalStorage(ctx, o, want[o]); err != nil {
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

// writeLocalStorage replaces origin's localStorage with items.
func (bc *bctx) writeLocalStorage(ctx context.Context, origin string, items []*latchkeyv1.StorageItem) error {
	pairs := make([][2]string, 0, len(items))
	for _, it := range items {
		pairs = append(pairs, [2]string{it.GetName(), it.GetValue()})
	}
	js, err := json.Marshal(pairs)
	if err != nil {
		return fmt.Errorf("encoding localStorage: %w", err)
	}
	if err := bc.onOrigin(ctx, origin); err != nil {
		return fmt.Errorf("restoring localStorage of %s: %w", origin, err)
	}
	script := `(items => { localStorage.clear(); for (const [k, v] of items) localStorage.setItem(k, v); })(` + string(js) + `)`
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](script)); err != nil {
		return fmt.Errorf("restoring localStorage of %s: %w", origin, err)
	}
	return nil
}

// onOrigin makes sure the tab shows a document of origin, loading the runner's empty
// synthetic document (answered by the runner, never by the site) when it does not.
func (bc *bctx) onOrigin(ctx context.Context, origin string) error {
	cur, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.origin`))
	if err == nil && cur == origin {
		return nil
	}
	return chromedp.Do(ctx, chromedp.Navigate(origin+syntheticPath))
}

// capture reads the state the context holds: every cookie of the browser context and
// the localStorage of every origin it was given or visited.
func (bc *bctx) capture(ctx context.Context, visited []string) (*latchkeyv1.StorageState, error) {
	res, err := chromedp.CallBrowser(ctx, storage.GetCookies, storage.GetCookiesParams{BrowserContextID: bc.bcID})
	if err != nil {
		return nil, fmt.Errorf("reading cookies: %w", err)
	}
	st := &latchkeyv1.StorageState{Cookies: fromCDPCookies(res.Cookies)}
	for _, o := range visited {
		bc.storageOrigins[o] = true
	}
	origins := make([]string, 0, len(bc.storageOrigins))
	for o := range bc.storageOrigins {
		origins = append(origins, o)
	}
	// Read the origin the tab shows first, in one call, so most captures load no
	// document.
	here, _ := chromedp.Run(ctx, chromedp.Evaluate[struct {
		Origin string     `json:"origin"`
		Items  [][]string `json:"items"`
	}](`({origin: location.origin, items: (() => { try { return Object.keys(localStorage).map(k => [k, localStorage.getItem(k)]) } catch (e) { return null } })()})`))
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
		var items []*latchkeyv1.StorageItem
		if o == cur && here.Items != nil {
			items = toItems(here.Items)
		} else if items, err = bc.readLocalStorage(ctx, o); err != nil {
			return nil, err
		}
		if len(items) > 0 {
			st.Origins = append(st.Origins, &latchkeyv1.OriginStorage{Origin: o, LocalStorage: items})
		}
	}
	normalize(st)
	return st, nil
}

func (bc *bctx) readLocalStorage(ctx context.Context, origin string) ([]*latchkeyv1.StorageItem, error) {
	if err := bc.onOrigin(ctx, origin); err != nil {
		return nil, fmt.Errorf("reading localStorage of %s: %w", origin, err)
	}
	pairs, err := chromedp.Run(ctx, chromedp.Evaluate[[][]string](
		`Object.keys(localStorage).map(k => [k, localStorage.getItem(k)])`))
	if err != nil {
		return nil, fmt.Errorf("reading localStorage of %s: %w", origin, err)
	}
	return toItems(pairs), nil
}

func toItems(pairs [][]string) []*latchkeyv1.StorageItem {
	items := make([]*latchkeyv1.StorageItem, 0, len(pairs))
	for _, p := range pairs {
		if len(p) == 2 {
			items = append(items, &latchkeyv1.StorageItem{Name: p[0], Value: p[1]})
		}
	}
	return items
}

// normalize sorts a state and rounds cookie expiries to whole seconds, so that the
// same state always encodes to the same bytes and a restore-capture round trip is
// no change.
func normalize(st *latchkeyv1.StorageState) {
	for _, c := range st.Cookies {
		if c.Expires > 0 {
			c.Expires = math.Round(c.Expires)
		}
	}
	slices.SortFunc(st.Cookies, func(a, b *latchkeyv1.Cookie) int {
		return strings.Compare(a.Domain+"\x00"+a.Path+"\x00"+a.Name, b.Domain+"\x00"+b.Path+"\x00"+b.Name)
	})
	slices.SortFunc(st.Origins, func(a, b *latchkeyv1.OriginStorage) int { return strings.Compare(a.Origin, b.Origin) })
	for _, o := range st.Origins {
		slices.SortFunc(o.LocalStorage, func(a, b *latchkeyv1.StorageItem) int { return strings.Compare(a.Name, b.Name) })
		slices.SortFunc(o.SessionStorage, func(a, b *latchkeyv1.StorageItem) int { return strings.Compare(a.Name, b.Name) })
	}
}

// sameState reports whether two states hold the same cookies and storage.
func sameState(a, b *latchkeyv1.StorageState) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	na, nb := cloneState(a), cloneState(b)
	normalize(na)
	normalize(nb)
	ea, err1 := storagestate.Marshal(na)
	eb, err2 := storagestate.Marshal(nb)
	return err1 == nil && err2 == nil && string(ea) == string(eb)
}

func cloneState(st *latchkeyv1.StorageState) *latchkeyv1.StorageState {
	b, err := storagestate.Marshal(st)
	if err != nil {
		return &latchkeyv1.StorageState{}
	}
	out, err := storagestate.Unmarshal(b)
	if err != nil {
		return &latchkeyv1.StorageState{}
	}
	return out
}

// fromCDPCookies converts the browser's cookies to Playwright's shape.
func fromCDPCookies(cs []*network.Cookie) []*latchkeyv1.Cookie {
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

// toCookieParams converts cookies for Storage.setCookies. A host-only cookie (a domain
// without a leading dot) is set through a URL, so it stays host-only; a domain cookie
// keeps its domain. Expired cookies are left out.
func toCookieParams(cs []*latchkeyv1.Cookie) []*network.CookieParam {
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

// earliestExpiry is the earliest expiry among the state's auth cookies: persistent
// HttpOnly cookies, or any persistent cookie when there is none of those.
func earliestExpiry(st *latchkeyv1.StorageState) time.Time {
	var auth, any float64
	for _, c := range st.GetCookies() {
		e := c.GetExpires()
		if e <= 0 {
			continue
		}
		if any == 0 || e < any {
			any = e
		}
		if c.GetHttpOnly() && (auth == 0 || e < auth) {
			auth = e
		}
	}
	if auth == 0 {
		auth = any
	}
	if auth == 0 {
		return time.Time{}
	}
	return time.Unix(int64(auth), 0)
}
