package chrome

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/chromedp/chromedp"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// originSnapshot is what readOriginScript reads in a document of one origin.
type originSnapshot struct {
	Origin  string     `json:"origin"`
	Local   [][]string `json:"local"`
	Session [][]string `json:"session"`
	IDB     []idbDump  `json:"idb"`
	Skipped int        `json:"skipped"`
	Error   string     `json:"error"`
}

type idbDump struct {
	Name    string     `json:"name"`
	Version int64      `json:"version"`
	Stores  []idbStore `json:"stores"`
}

type idbStore struct {
	Name          string      `json:"name"`
	AutoIncrement bool        `json:"autoIncrement"`
	KeyPath       string      `json:"keyPath"`
	KeyPathArray  []string    `json:"keyPathArray"`
	Indexes       []idbIndex  `json:"indexes"`
	Records       []idbRecord `json:"records"`
}

type idbIndex struct {
	Name         string   `json:"name"`
	KeyPath      string   `json:"keyPath"`
	KeyPathArray []string `json:"keyPathArray"`
	MultiEntry   bool     `json:"multiEntry"`
	Unique       bool     `json:"unique"`
}

// idbRecord holds key and value as JSON text ("" for no key: in-line keys).
type idbRecord struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// readOriginScript reads the document's origin, its localStorage and sessionStorage,
// and every IndexedDB database it can open, with their schemas. A record whose key or
// value JSON cannot hold as it is (a Date, bytes, a Map) is left out and counted.
const readOriginScript = `(async () => {
  const pairs = s => { try { return Object.keys(s).map(k => [k, s.getItem(k)]) } catch (e) { return null } };
  const out = {origin: location.origin, local: pairs(localStorage), session: pairs(sessionStorage), idb: [], skipped: 0, error: ""};
  const plain = v => v === null || typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && isFinite(v)) ||
    (Array.isArray(v) && v.every(plain)) ||
    (typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype && Object.values(v).every(plain));
  const json = v => plain(v) ? JSON.stringify(v) : null;
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
        const path = p => ({keyPath: typeof p === 'string' ? p : '', keyPathArray: Array.isArray(p) ? p : []});
        const indexes = Array.from(st.indexNames).map(n => { const i = st.index(n); return {name: n, ...path(i.keyPath), multiEntry: i.multiEntry, unique: i.unique}; });
        const records = [];
        keys.forEach((k, j) => {
          const v = json(values[j]), key = kp === null ? json(k) : '';
          if (v === null || key === null) { out.skipped++; return; }
          records.push({key, value: v});
        });
        stores.push({name: sn, autoIncrement: st.autoIncrement, ...path(kp), indexes, records});
      }
      db.close();
      out.idb.push({name, version, stores});
    }
  } catch (e) { out.error = String(e && e.name || e); }
  return out;
})()`

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
        if (s.keyPathArray.length) opts.keyPath = s.keyPathArray; else if (s.keyPath) opts.keyPath = s.keyPath;
        const os = open.result.createObjectStore(s.name, opts);
        for (const i of s.indexes) os.createIndex(i.name, i.keyPathArray.length ? i.keyPathArray : i.keyPath, {unique: i.unique, multiEntry: i.multiEntry});
      }
    };
    const db = await req(open);
    const names = d.stores.filter(s => s.records.length).map(s => s.name);
    if (names.length) {
      const tx = db.transaction(names, 'readwrite');
      for (const s of d.stores) for (const r of s.records) {
        const os = tx.objectStore(s.name), value = JSON.parse(r.value);
        if (r.key) os.put(value, JSON.parse(r.key)); else os.put(value);
      }
      await new Promise((res, rej) => { tx.oncomplete = res; tx.onerror = () => rej(tx.error); tx.onabort = () => rej(tx.error); });
    }
    db.close();
  }
  return blocked;
})`

// snapshotFromJS turns what readOriginScript read into an origin's storage.
func snapshotFromJS(s originSnapshot) *latchkeyv1.OriginStorage {
	o := &latchkeyv1.OriginStorage{Origin: s.Origin, LocalStorage: StorageItems(s.Local), SessionStorage: StorageItems(s.Session)}
	for _, d := range s.IDB {
		db := &latchkeyv1.IndexedDBDatabase{Name: d.Name, Version: d.Version}
		for _, st := range d.Stores {
			ps := &latchkeyv1.IndexedDBStore{Name: st.Name, AutoIncrement: st.AutoIncrement, KeyPath: st.KeyPath, KeyPathArray: st.KeyPathArray}
			for _, i := range st.Indexes {
				ps.Indexes = append(ps.Indexes, &latchkeyv1.IndexedDBIndex{Name: i.Name, KeyPath: i.KeyPath, KeyPathArray: i.KeyPathArray, MultiEntry: i.MultiEntry, Unique: i.Unique})
			}
			for _, r := range st.Records {
				ps.Records = append(ps.Records, &latchkeyv1.IndexedDBRecord{Key: r.Key, Value: r.Value})
			}
			db.Stores = append(db.Stores, ps)
		}
		o.IndexedDb = append(o.IndexedDb, db)
	}
	return o
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
	dbs := []idbDump{}
	for _, d := range o.GetIndexedDb() {
		dump := idbDump{Name: d.GetName(), Version: max(d.GetVersion(), 1), Stores: []idbStore{}}
		for _, s := range d.GetStores() {
			st := idbStore{Name: s.GetName(), AutoIncrement: s.GetAutoIncrement(), KeyPath: s.GetKeyPath(), KeyPathArray: nonNil(s.GetKeyPathArray()), Indexes: []idbIndex{}, Records: []idbRecord{}}
			for _, i := range s.GetIndexes() {
				st.Indexes = append(st.Indexes, idbIndex{Name: i.GetName(), KeyPath: i.GetKeyPath(), KeyPathArray: nonNil(i.GetKeyPathArray()), MultiEntry: i.GetMultiEntry(), Unique: i.GetUnique()})
			}
			for _, r := range s.GetRecords() {
				if r.GetValue() == "" || r.GetKeyEncoded() != "" {
					continue
				}
				st.Records = append(st.Records, idbRecord{Key: r.GetKey(), Value: r.GetValue()})
			}
			dump.Stores = append(dump.Stores, st)
		}
		dbs = append(dbs, dump)
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

// readOrigin reads origin's web storage in a document of that origin.
func (bc *Context) readOrigin(ctx context.Context, origin string) (originSnapshot, error) {
	if err := bc.OnOrigin(ctx, origin); err != nil {
		return originSnapshot{}, fmt.Errorf("reading the web storage of %s: %w", origin, err)
	}
	s, err := chromedp.Run(ctx, chromedp.Evaluate[originSnapshot](readOriginScript, chromedp.EvalAwaitPromise))
	if err != nil {
		return originSnapshot{}, fmt.Errorf("reading the web storage of %s: %w", origin, err)
	}
	return s, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
