package storagestate

import (
	"google.golang.org/protobuf/proto"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// Merge combines two storage states written from the same base by racing Runs:
// current is the newest stored state (the other Run's), mine is the state this writer
// captured, and base is the revision both started from (nil when unknown). It is a
// three-way merge, cookie by cookie and storage key by storage key:
//
//   - a cookie (by name, domain and path) both sides hold: the side that changed it
//     when the other still has the base version; if both changed it, the later expiry
//     wins, a session cookie (-1) counting as the latest, and on a tie mine wins;
//   - a storage item both sides hold with different values: mine wins, unless mine
//     still has the base value (only current changed it);
//   - something only one side holds: kept, unless the other side deleted it — it was in
//     base and this side still has it unchanged from base;
//   - IndexedDB, database by database by the same rules (a database is one value:
//     records of one database are not merged);
//
// so neither writer loses a cookie the other set or refreshed, and a logout (a deleted
// cookie) is not undone by a writer that never touched it. The result is a new state:
// current's order first, then what only mine adds. Its inputs are not modified.
func Merge(base, current, mine *latchkeyv1.StorageState) *latchkeyv1.StorageState {
	out := &latchkeyv1.StorageState{
		Cookies: mergeCookies(base.GetCookies(), current.GetCookies(), mine.GetCookies()),
	}
	baseOrigins := originsByName(base.GetOrigins())
	mineOrigins := originsByName(mine.GetOrigins())
	seen := map[string]bool{}
	for _, c := range current.GetOrigins() {
		seen[c.GetOrigin()] = true
		b, m := baseOrigins[c.GetOrigin()], mineOrigins[c.GetOrigin()]
		if o := mergeOrigin(c.GetOrigin(), b, c, m); o != nil {
			out.Origins = append(out.Origins, o)
		}
	}
	for _, m := range mine.GetOrigins() {
		if seen[m.GetOrigin()] {
			continue
		}
		if o := mergeOrigin(m.GetOrigin(), baseOrigins[m.GetOrigin()], nil, m); o != nil {
			out.Origins = append(out.Origins, o)
		}
	}
	return out
}

func mergeCookies(base, current, mine []*latchkeyv1.Cookie) []*latchkeyv1.Cookie {
	baseBy, mineBy := cookiesByKey(base), cookiesByKey(mine)
	var out []*latchkeyv1.Cookie
	seen := map[cookieKey]bool{}
	for _, c := range current {
		k := keyOf(c)
		seen[k] = true
		b, m := baseBy[k], mineBy[k]
		switch {
		case m != nil:
			out = append(out, clone(pickCookie(b, c, m)))
		case b != nil && proto.Equal(b, c):
			// Mine deleted it and current did not change it: deleted.
		default:
			out = append(out, clone(c))
		}
	}
	for _, m := range mine {
		k := keyOf(m)
		if seen[k] {
			continue
		}
		if b := baseBy[k]; b != nil && proto.Equal(b, m) {
			continue // current deleted it and mine did not change it
		}
		out = append(out, clone(m))
	}
	return out
}

// pickCookie chooses between two versions of a cookie: the one that changed when the
// other still equals base, else the newer.
func pickCookie(base, current, mine *latchkeyv1.Cookie) *latchkeyv1.Cookie {
	switch {
	case base != nil && proto.Equal(base, mine):
		return current
	case base != nil && proto.Equal(base, current):
		return mine
	}
	return newerCookie(current, mine)
}

// newerCookie returns the cookie with the later expiry, mine on a tie. A session
// cookie (-1) lives as long as the browser, so it counts as the latest.
func newerCookie(current, mine *latchkeyv1.Cookie) *latchkeyv1.Cookie {
	exp := func(c *latchkeyv1.Cookie) float64 {
		if c.GetExpires() < 0 {
			return 1e300
		}
		return c.GetExpires()
	}
	if exp(current) > exp(mine) {
		return current
	}
	return mine
}

func mergeOrigin(origin string, base, current, mine *latchkeyv1.OriginStorage) *latchkeyv1.OriginStorage {
	o := &latchkeyv1.OriginStorage{
		Origin:         origin,
		LocalStorage:   mergeItems(base.GetLocalStorage(), current.GetLocalStorage(), mine.GetLocalStorage()),
		SessionStorage: mergeItems(base.GetSessionStorage(), current.GetSessionStorage(), mine.GetSessionStorage()),
		IndexedDb:      mergeDatabases(base.GetIndexedDb(), current.GetIndexedDb(), mine.GetIndexedDb()),
	}
	if len(o.LocalStorage) == 0 && len(o.SessionStorage) == 0 && len(o.IndexedDb) == 0 {
		return nil
	}
	return o
}

func mergeItems(base, current, mine []*latchkeyv1.StorageItem) []*latchkeyv1.StorageItem {
	baseBy, mineBy := itemsByName(base), itemsByName(mine)
	var out []*latchkeyv1.StorageItem
	seen := map[string]bool{}
	add := func(name, value string) {
		out = append(out, &latchkeyv1.StorageItem{Name: name, Value: value})
	}
	for _, c := range current {
		seen[c.GetName()] = true
		b, inBase := baseBy[c.GetName()]
		m, inMine := mineBy[c.GetName()]
		switch {
		case inMine && inBase && m == b:
			add(c.GetName(), c.GetValue()) // only current changed it (or nobody did)
		case inMine:
			add(c.GetName(), m)
		case inBase && b == c.GetValue():
			// Mine deleted it and current did not change it: deleted.
		default:
			add(c.GetName(), c.GetValue())
		}
	}
	for _, m := range mine {
		if seen[m.GetName()] {
			continue
		}
		if b, inBase := baseBy[m.GetName()]; inBase && b == m.GetValue() {
			continue // current deleted it and mine did not change it
		}
		add(m.GetName(), m.GetValue())
	}
	return out
}

func cookiesByKey(cs []*latchkeyv1.Cookie) map[cookieKey]*latchkeyv1.Cookie {
	m := make(map[cookieKey]*latchkeyv1.Cookie, len(cs))
	for _, c := range cs {
		m[keyOf(c)] = c
	}
	return m
}

func originsByName(os []*latchkeyv1.OriginStorage) map[string]*latchkeyv1.OriginStorage {
	m := make(map[string]*latchkeyv1.OriginStorage, len(os))
	for _, o := range os {
		m[o.GetOrigin()] = o
	}
	return m
}

func itemsByName(items []*latchkeyv1.StorageItem) map[string]string {
	m := make(map[string]string, len(items))
	for _, it := range items {
		m[it.GetName()] = it.GetValue()
	}
	return m
}

func clone(c *latchkeyv1.Cookie) *latchkeyv1.Cookie {
	return proto.Clone(c).(*latchkeyv1.Cookie)
}
