package storagestate

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

func ck(name, value string, expires float64) *latchkeyv1.Cookie {
	return &latchkeyv1.Cookie{Name: name, Value: value, Domain: "portal.example", Path: "/", Expires: expires}
}

func state(cookies []*latchkeyv1.Cookie, items ...string) *latchkeyv1.StorageState {
	st := &latchkeyv1.StorageState{Cookies: cookies}
	if len(items) > 0 {
		o := &latchkeyv1.OriginStorage{Origin: "https://portal.example"}
		for i := 0; i+1 < len(items); i += 2 {
			o.LocalStorage = append(o.LocalStorage, &latchkeyv1.StorageItem{Name: items[i], Value: items[i+1]})
		}
		st.Origins = []*latchkeyv1.OriginStorage{o}
	}
	return st
}

func cookies(cs ...*latchkeyv1.Cookie) []*latchkeyv1.Cookie { return cs }

func TestMerge(t *testing.T) {
	t.Parallel()
	base := state(cookies(ck("sid", "v0", 100), ck("csrf", "c0", 100), ck("old", "o", 100)), "token", "t0", "theme", "light")
	cases := []struct {
		name                string
		base, current, mine *latchkeyv1.StorageState
		want                *latchkeyv1.StorageState
	}{{
		name:    "each side refreshed a different cookie: both kept",
		base:    base,
		current: state(cookies(ck("sid", "v1", 200), ck("csrf", "c0", 100), ck("old", "o", 100)), "token", "t0", "theme", "light"),
		mine:    state(cookies(ck("sid", "v0", 100), ck("csrf", "c1", 300), ck("old", "o", 100)), "token", "t0", "theme", "light"),
		want:    state(cookies(ck("sid", "v1", 200), ck("csrf", "c1", 300), ck("old", "o", 100)), "token", "t0", "theme", "light"),
	}, {
		name:    "both rotated the same cookie: the later expiry wins",
		base:    base,
		current: state(cookies(ck("sid", "theirs", 500), ck("csrf", "c0", 100), ck("old", "o", 100))),
		mine:    state(cookies(ck("sid", "mine", 400), ck("csrf", "c0", 100), ck("old", "o", 100))),
		want:    state(cookies(ck("sid", "theirs", 500), ck("csrf", "c0", 100), ck("old", "o", 100))),
	}, {
		name:    "both rotated with the same expiry: mine wins",
		base:    base,
		current: state(cookies(ck("sid", "theirs", 500))),
		mine:    state(cookies(ck("sid", "mine", 500))),
		want:    state(cookies(ck("sid", "mine", 500))),
	}, {
		name:    "a session cookie counts as the latest",
		base:    nil,
		current: state(cookies(ck("sid", "theirs", -1))),
		mine:    state(cookies(ck("sid", "mine", 999999))),
		want:    state(cookies(ck("sid", "theirs", -1))),
	}, {
		name:    "new cookies on both sides: union",
		base:    base,
		current: state(cookies(ck("sid", "v0", 100), ck("csrf", "c0", 100), ck("old", "o", 100), ck("a", "1", 100))),
		mine:    state(cookies(ck("sid", "v0", 100), ck("csrf", "c0", 100), ck("old", "o", 100), ck("b", "2", 100))),
		want:    state(cookies(ck("sid", "v0", 100), ck("csrf", "c0", 100), ck("old", "o", 100), ck("a", "1", 100), ck("b", "2", 100))),
	}, {
		name:    "a cookie deleted on one side and untouched on the other stays deleted",
		base:    base,
		current: state(cookies(ck("sid", "v0", 100), ck("csrf", "c0", 100))),
		mine:    state(cookies(ck("sid", "v0", 100), ck("old", "o", 100))),
		want:    state(cookies(ck("sid", "v0", 100))),
	}, {
		name:    "a cookie deleted on one side but refreshed on the other is kept",
		base:    base,
		current: state(cookies(ck("sid", "v0", 100), ck("csrf", "c0", 100), ck("old", "o2", 900))),
		mine:    state(cookies(ck("sid", "v0", 100), ck("csrf", "c0", 100))),
		want:    state(cookies(ck("sid", "v0", 100), ck("csrf", "c0", 100), ck("old", "o2", 900))),
	}, {
		name:    "no base: plain union, nothing dropped",
		base:    nil,
		current: state(cookies(ck("a", "1", 100)), "x", "1"),
		mine:    state(cookies(ck("b", "2", 100)), "y", "2"),
		want: &latchkeyv1.StorageState{Cookies: cookies(ck("a", "1", 100), ck("b", "2", 100)), Origins: []*latchkeyv1.OriginStorage{{
			Origin: "https://portal.example", LocalStorage: []*latchkeyv1.StorageItem{{Name: "x", Value: "1"}, {Name: "y", Value: "2"}},
		}}},
	}, {
		name:    "localStorage per key: each side's change kept, mine wins a real conflict",
		base:    base,
		current: state(nil, "token", "t-theirs", "theme", "dark"),
		mine:    state(nil, "token", "t-mine", "theme", "light", "lang", "fr"),
		want:    state(nil, "token", "t-mine", "theme", "dark", "lang", "fr"),
	}, {
		name:    "localStorage key removed by one side and untouched by the other stays removed",
		base:    base,
		current: state(nil, "token", "t0"),
		mine:    state(nil, "token", "t0", "theme", "light"),
		want:    state(nil, "token", "t0"),
	}, {
		name:    "an origin only mine has is added",
		base:    nil,
		current: &latchkeyv1.StorageState{},
		mine:    state(nil, "k", "v"),
		want:    state(nil, "k", "v"),
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			before := []proto.Message{proto.Clone(tc.current), proto.Clone(tc.mine)}
			got := Merge(tc.base, tc.current, tc.mine)
			if d := cmp.Diff(tc.want, got, protocmp.Transform()); d != "" {
				t.Errorf("merge (-want +got):\n%s", d)
			}
			if !proto.Equal(before[0], tc.current) || !proto.Equal(before[1], tc.mine) {
				t.Error("Merge modified its inputs")
			}
			if err := Validate(got); err != nil {
				t.Errorf("merged state is invalid: %v", err)
			}
		})
	}
}

// TestRacingWriteBacksLoseNoCookie plays the write-back protocol of PutStorageState
// (compare-and-swap on the revision; on conflict re-read, Merge, retry) with many
// writers against an in-memory revision store: every cookie any writer set survives.
func TestRacingWriteBacksLoseNoCookie(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		rev     int64
		current = &latchkeyv1.StorageState{}
	)
	get := func() (int64, *latchkeyv1.StorageState) {
		mu.Lock()
		defer mu.Unlock()
		return rev, proto.Clone(current).(*latchkeyv1.StorageState)
	}
	put := func(base int64, st *latchkeyv1.StorageState) bool {
		mu.Lock()
		defer mu.Unlock()
		if base != rev {
			return false
		}
		rev, current = rev+1, st
		return true
	}
	const writers = 16
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			baseRev, base := get()
			mine := proto.Clone(base).(*latchkeyv1.StorageState)
			mine.Cookies = append(mine.Cookies, ck("w"+string(rune('a'+w)), "v", 100))
			for !put(baseRev, mine) {
				newRev, cur := get()
				mine = Merge(base, cur, mine)
				baseRev, base = newRev, cur
			}
		})
	}
	wg.Wait()
	_, final := get()
	if len(final.GetCookies()) != writers {
		t.Fatalf("%d cookies survived, want %d: %v", len(final.GetCookies()), writers, final)
	}
}

// TestMergeIndexedDB: databases merge as a whole, by the rules of storage items.
func TestMergeIndexedDB(t *testing.T) {
	db := func(name, value string) *latchkeyv1.IndexedDBDatabase {
		return &latchkeyv1.IndexedDBDatabase{Name: name, Version: 1, Stores: []*latchkeyv1.IndexedDBStore{{
			Name: "s", KeyPath: "id", Records: []*latchkeyv1.IndexedDBRecord{{Value: value}},
		}}}
	}
	origin := func(dbs ...*latchkeyv1.IndexedDBDatabase) *latchkeyv1.StorageState {
		return &latchkeyv1.StorageState{Origins: []*latchkeyv1.OriginStorage{{Origin: "https://a.example", IndexedDb: dbs}}}
	}
	base := origin(db("auth", `{"id":1,"t":"old"}`), db("cache", `{"id":1}`))
	current := origin(db("auth", `{"id":1,"t":"old"}`), db("cache", `{"id":1}`), db("other", `{"id":2}`))
	mine := origin(db("auth", `{"id":1,"t":"new"}`)) // refreshed auth, deleted cache
	got := Merge(base, current, mine).GetOrigins()[0].GetIndexedDb()
	var names []string
	for _, d := range got {
		names = append(names, d.GetName()+"="+d.GetStores()[0].GetRecords()[0].GetValue())
	}
	want := []string{`auth={"id":1,"t":"new"}`, `other={"id":2}`}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("merged databases %v, want %v", names, want)
	}
}

// TestPlaywrightIndexedDBRoundTrip: Playwright's indexedDB (1.51+) and Latchkey's
// sessionStorage survive import and export unchanged; a record that is not JSON, or
// has no value, is refused.
func TestPlaywrightIndexedDBRoundTrip(t *testing.T) {
	in := `{"cookies":[],"origins":[{"origin":"https://a.example","localStorage":[],"sessionStorage":[{"name":"tab","value":"1"}],` +
		`"indexedDB":[{"name":"auth","version":3,"stores":[{"name":"tokens","autoIncrement":false,"keyPath":"id",` +
		`"records":[{"value":{"id":"t1","token":"abc"}},{"valueEncoded":{"v":{"d":"2026-01-01T00:00:00.000Z"}}}],` +
		`"indexes":[{"name":"by_token","keyPath":"token","multiEntry":false,"unique":true}]},` +
		`{"name":"kv","autoIncrement":true,"records":[{"key":1,"value":"x"}],"indexes":[]}]}]}]}`
	st, err := FromPlaywright([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	out, err := ToPlaywright(st)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	_ = json.Unmarshal([]byte(in), &a)
	_ = json.Unmarshal(out, &b)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("round trip changed the state:\nin  %s\nout %s", in, out)
	}
	for _, bad := range []string{
		strings.Replace(in, `{"key":1,"value":"x"}`, `{"key":1}`, 1),
		strings.Replace(in, `"version":3`, `"version":0`, 1),
	} {
		if _, err := FromPlaywright([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("FromPlaywright(%.80s...) = %v, want ErrInvalid", bad[60:], err)
		}
	}
}
