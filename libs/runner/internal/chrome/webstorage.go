package chrome

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/chromedp/chromedp"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/storagestate"
)

// originSnapshot is what readOriginScript reads in a document of one origin; its
// IndexedDB is in Playwright's storageState shape.
type originSnapshot struct {
	Origin  string                            `json:"origin"`
	Local   [][]string                        `json:"local"`
	Session [][]string                        `json:"session"`
	IDB     []storagestate.PlaywrightDatabase `json:"idb"`
	// IDBRead: IndexedDB was read (IDB holds it); otherwise it was not asked for.
	IDBRead bool `json:"idbRead"`
	// Error is set when IndexedDB could not be read; IDB is then incomplete.
	Error string `json:"error"`
}

// readOriginExpr reads the document's origin, its localStorage and sessionStorage,
// and, with idb, every IndexedDB database it can open, with their schemas, in
// Playwright's storageState shape. A record whose key or value JSON cannot hold as it
// is (a Date, bytes, a Map) is left out. Reading IndexedDB costs the page a round trip
// to the browser's storage per database (1-3 ms in a newly loaded document, measured
// on the project VM, 2026-12-04) even when it holds none: a capture asks for it only
// where it may have changed (Context.indexedDBChanged).
func readOriginExpr(idb bool) string {
	if idb {
		return readOriginScript + "(true)"
	}
	return readOriginScript + "(false)"
}

const readOriginScript = `(async (idb) => {
  const pairs = s => { try { return Object.keys(s).map(k => [k, s.getItem(k)]) } catch (e) { return null } };
  const out = {origin: location.origin, local: pairs(localStorage), session: pairs(sessionStorage), idb: [], idbRead: idb, error: ""};
  if (!idb) return out;
  const plain = v => v === null || typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && isFinite(v)) ||
    (Array.isArray(v) && v.every(plain)) ||
    (typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype && Object.values(v).every(plain));
  const req = r => new Promise((res, rej) => { r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); });
  try {
    for (const {name, version} of await indexedDB.databases()) {
      if (!name) continue;
      const db = await req(indexedDB.open(name));
      const stores = [];
      for (const sn of Array.from(db.objectStoreNames)) {
        const st = db.transaction(sn, 'readonly').objectStore(sn);
        const [keys, values] = await Promise.all([req(st.getAllKeys()), req(st.getAll())]);
        const kp = st.keyPath;
        const path = p => typeof p === 'string' ? {keyPath: p} : Array.isArray(p) ? {keyPathArray: p} : {};
        const indexes = Array.from(st.indexNames).map(n => { const i = st.index(n); return {name: n, ...path(i.keyPath), multiEntry: i.multiEntry, unique: i.unique}; });
        const records = [];
        keys.forEach((k, j) => {
          if (!plain(values[j]) || (kp === null && !plain(k))) return;
          records.push(kp === null ? {key: k, value: values[j]} : {value: values[j]});
        });
        stores.push({name: sn, autoIncrement: st.autoIncrement, ...path(kp), indexes, records});
      }
      db.close();
      out.idb.push({name, version, stores});
    }
  } catch (e) { out.error = String(e && e.name || e); }
  return out;
})`

// writeOriginScript replaces the document's origin's localStorage, sessionStorage and
// IndexedDB with the given ones and resolves when every database is written. A
// database another tab holds open (its delete is blocked) is left as it is.
const writeOriginScript = `(async (local, session, dbs) => {
  localStorage.clear(); for (const [k, v] of local) localStorage.setItem(k, v);
  sessionStorage.clear(); for (const [k, v] of session) sessionStorage.setItem(k, v);
  const req = r => new Promise((res, rej) => { r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); r.onblocked = () => res('blocked'); });
  const blocked = [];
  for (const {name} of await indexedDB.databases()) {
    if (name && await req(indexedDB.deleteDatabase(name)) === 'blocked') blocked.push(name);
  }
  for (const d of dbs) {
    if (blocked.includes(d.name)) continue;
    const open = indexedDB.open(d.name, d.version);
    open.onupgradeneeded = () => {
      for (const s of d.stores) {
        const opts = {autoIncrement: s.autoIncrement};
        if (s.keyPathArray) opts.keyPath = s.keyPathArray; else if (s.keyPath) opts.keyPath = s.keyPath;
        const os = open.result.createObjectStore(s.name, opts);
        for (const i of s.indexes) os.createIndex(i.name, i.keyPathArray || i.keyPath, {unique: i.unique, multiEntry: i.multiEntry});
      }
    };
    const db = await req(open);
    const names = d.stores.filter(s => s.records.length).map(s => s.name);
    if (names.length) {
      const tx = db.transaction(names, 'readwrite');
      for (const s of d.stores) for (const r of s.records) {
        const os = tx.objectStore(s.name);
        if (r.key !== undefined) os.put(r.value, r.key); else os.put(r.value);
      }
      await new Promise((res, rej) => { tx.oncomplete = res; tx.onerror = () => rej(tx.error); tx.onabort = () => rej(tx.error); });
    }
    db.close();
  }
  return blocked;
})`

// snapshotFromJS turns what readOriginScript read into an origin's storage.
func snapshotFromJS(s originSnapshot) *latchkeyv1.OriginStorage {
	return &latchkeyv1.OriginStorage{
		Origin: s.Origin, LocalStorage: StorageItems(s.Local), SessionStorage: StorageItems(s.Session),
		IndexedDb: storagestate.DatabasesFromPlaywright(s.IDB),
	}
}

// writeOrigin replaces origin's web storage with o's (nil: empty) in a document of
// that origin. IndexedDB records kept only in Playwright's encoded form (a Date, bytes)
// are not written: Latchkey cannot decode them.
func (bc *Context) writeOrigin(ctx context.Context, origin string, o *latchkeyv1.OriginStorage) error {
	pairs := func(items []*latchkeyv1.StorageItem) [][2]string {
		out := make([][2]string, 0, len(items))
		for _, it := range items {
			out = append(out, [2]string{it.GetName(), it.GetValue()})
		}
		return out
	}
	dbs := storagestate.DatabasesToPlaywright(o.GetIndexedDb())
	for i := range dbs {
		for j := range dbs[i].Stores {
			st := &dbs[i].Stores[j]
			st.Records = slices.DeleteFunc(st.Records, func(r storagestate.PlaywrightRecord) bool {
				return len(r.Value) == 0 || len(r.KeyEncoded) > 0
			})
		}
	}
	if dbs == nil {
		dbs = []storagestate.PlaywrightDatabase{}
	}
	args, err := json.Marshal([]any{pairs(o.GetLocalStorage()), pairs(o.GetSessionStorage()), dbs})
	if err != nil {
		return fmt.Errorf("encoding the web storage of %s: %w", origin, err)
	}
	if err := bc.OnOrigin(ctx, origin); err != nil {
		return fmt.Errorf("restoring the web storage of %s: %w", origin, err)
	}
	script := writeOriginScript + `(...` + string(args) + `)`
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](script, chromedp.EvalAwaitPromise)); err != nil {
		return fmt.Errorf("restoring the web storage of %s: %w", origin, err)
	}
	return nil
}

// readOrigin reads origin's web storage in a document of that origin, IndexedDB only
// with idb.
func (bc *Context) readOrigin(ctx context.Context, origin string, idb bool) (originSnapshot, error) {
	if err := bc.OnOrigin(ctx, origin); err != nil {
		return originSnapshot{}, fmt.Errorf("reading the web storage of %s: %w", origin, err)
	}
	s, err := chromedp.Run(ctx, chromedp.Evaluate[originSnapshot](readOriginExpr(idb), chromedp.EvalAwaitPromise))
	if err != nil {
		return originSnapshot{}, fmt.Errorf("reading the web storage of %s: %w", origin, err)
	}
	return s, nil
}
