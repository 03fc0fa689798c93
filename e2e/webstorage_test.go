package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

var spaAPI = &latchkeyv1.BundleFile{Path: "spa.yaml", Content: []byte(`
apis:
  spa:
    steps:
      - goto: "{{ .Vars.baseURL }}/spa"
      - waitVisible: "#ready"
      - extract: { as: sessionToken, selector: "#session-token" }
      - extract: { as: idbToken, selector: "#idb-token" }
      - extract: { as: visits, selector: "#visits" }
`)}

// TestSessionStorageAndIndexedDBRoundTrip: a state imported in Playwright's format
// with a token in sessionStorage and one in IndexedDB is restored before the portal's
// single-page app runs its script (it reads them as it loads); what the app writes to
// IndexedDB is captured after the Run; and export gives both back in the same format.
func TestSessionStorageAndIndexedDBRoundTrip(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	w.deploy(t, spaAPI)
	sess := w.readySession(t)
	exported, err := w.sessions.ExportStorageState(t.Context(), &latchkeyv1.ExportStorageStateRequest{AuthSessionId: sess.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	var state map[string]any
	if err := json.Unmarshal(exported.GetStorageStateJson(), &state); err != nil {
		t.Fatal(err)
	}
	state["origins"] = []any{map[string]any{
		"origin":         w.portalURL,
		"localStorage":   []any{},
		"sessionStorage": []any{map[string]any{"name": "sessionToken", "value": "ss-123"}},
		"indexedDB": []any{
			map[string]any{"name": "app", "version": 1, "stores": []any{map[string]any{
				"name": "tokens", "autoIncrement": false, "keyPath": "id",
				"indexes": []any{map[string]any{"name": "by_token", "keyPath": "token", "multiEntry": false, "unique": true}},
				"records": []any{map[string]any{"value": map[string]any{"id": "auth", "token": "idb-456"}}},
			}}},
			// Out-of-line keys, a compound key path: restored and captured as they are.
			map[string]any{"name": "kv", "version": 4, "stores": []any{
				map[string]any{"name": "plain", "autoIncrement": false, "indexes": []any{},
					"records": []any{map[string]any{"key": []any{"k", 1}, "value": map[string]any{"a": 1.0}}}},
				map[string]any{"name": "compound", "autoIncrement": false, "keyPathArray": []any{"x", "y"}, "indexes": []any{},
					"records": []any{map[string]any{"value": map[string]any{"x": 1.0, "y": 2.0}}}},
			}},
		},
	}}
	b, _ := json.Marshal(state)
	if _, err := w.sessions.ImportStorageState(t.Context(), &latchkeyv1.ImportStorageStateRequest{AuthSessionId: sess.GetId(), StorageStateJson: b}); err != nil {
		t.Fatalf("ImportStorageState: %v", err)
	}

	run := w.wait(t, w.start(t, "spa", sess.GetId(), nil).GetId())
	if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("spa: %s %s", run.GetState(), run.GetFailureMessage())
	}
	out := run.GetOutput().GetStructValue().GetFields()
	if got := out["sessionToken"].GetStringValue(); got != "ss-123" {
		t.Errorf("the app's script found sessionStorage token %q as it loaded, want ss-123", got)
	}
	if got := out["idbToken"].GetStringValue(); got != "idb-456" {
		t.Errorf("the app's script found IndexedDB token %q, want idb-456", got)
	}

	// The app counted its visit in IndexedDB; the Run's capture kept it.
	var back struct {
		Origins []struct {
			Origin         string
			SessionStorage []struct{ Name, Value string }
			IndexedDB      []struct {
				Name   string
				Stores []struct {
					Name    string
					Records []struct{ Value map[string]any }
				}
			} `json:"indexedDB"`
		}
	}
	w.eventually(t, 30*time.Second, func() (bool, string) {
		e, err := w.sessions.ExportStorageState(t.Context(), &latchkeyv1.ExportStorageStateRequest{AuthSessionId: sess.GetId()})
		if err != nil {
			return false, err.Error()
		}
		if err := json.Unmarshal(e.GetStorageStateJson(), &back); err != nil {
			return false, err.Error()
		}
		seen := map[string]any{}
		for _, o := range back.Origins {
			for _, it := range o.SessionStorage {
				seen["ss:"+it.Name] = it.Value
			}
			for _, db := range o.IndexedDB {
				for _, s := range db.Stores {
					for _, r := range s.Records {
						if id, ok := r.Value["id"].(string); ok {
							seen["idb:"+db.Name+"/"+s.Name+"/"+id] = r.Value
						}
					}
				}
			}
		}
		ok := seen["ss:sessionToken"] == "ss-123" && seen["idb:app/tokens/auth"] != nil && seen["idb:app/tokens/visits"] != nil
		ok = ok && strings.Contains(string(e.GetStorageStateJson()), `"key": [`) && strings.Contains(string(e.GetStorageStateJson()), `"keyPathArray": [`) &&
			strings.Contains(string(e.GetStorageStateJson()), `"name": "by_token"`) && strings.Contains(string(e.GetStorageStateJson()), `"version": 4`)
		return ok, "exported state lacks the tokens, the visit count or the kv database as imported: " + string(e.GetStorageStateJson())
	})
}

// TestIndexedDBInAWarmContext: a warm context reads IndexedDB at a capture only where
// it changed, so the Runs in between must keep it in the state they write back (not
// drop it), and a change made after them must be captured. The portal's app counts
// its visits in IndexedDB; list-invoices never touches it.
func TestIndexedDBInAWarmContext(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	w.deploy(t, spaAPI)
	sess := w.readySession(t)
	run := func(api string) *latchkeyv1.Run {
		t.Helper()
		r := w.wait(t, w.start(t, api, sess.GetId(), nil).GetId())
		if r.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			t.Fatalf("%s: %s %s", api, r.GetState(), r.GetFailureMessage())
		}
		return r
	}
	// visits is the count the session's stored state holds, once its revision is
	// newer than after.
	visits := func(after int64) (float64, int64) {
		t.Helper()
		var n float64
		var rev int64
		w.eventually(t, 30*time.Second, func() (bool, string) {
			got, err := w.sessions.GetAuthSession(t.Context(), &latchkeyv1.GetAuthSessionRequest{AuthSessionId: sess.GetId()})
			if err != nil {
				return false, err.Error()
			}
			if rev = got.GetAuthSession().GetStateRevision(); rev <= after {
				return false, "no newer state written back"
			}
			e, err := w.sessions.ExportStorageState(t.Context(), &latchkeyv1.ExportStorageStateRequest{AuthSessionId: sess.GetId()})
			if err != nil {
				return false, err.Error()
			}
			var st struct {
				Origins []struct {
					IndexedDB []struct {
						Name   string
						Stores []struct {
							Records []struct{ Value map[string]any }
						}
					} `json:"indexedDB"`
				}
			}
			if err := json.Unmarshal(e.GetStorageStateJson(), &st); err != nil {
				return false, err.Error()
			}
			for _, o := range st.Origins {
				for _, db := range o.IndexedDB {
					for _, s := range db.Stores {
						for _, r := range s.Records {
							if db.Name == "app" && r.Value["id"] == "visits" {
								n, _ = r.Value["n"].(float64)
								return true, ""
							}
						}
					}
				}
			}
			return false, "the stored state has no visits record: " + string(e.GetStorageStateJson())
		})
		return n, rev
	}
	if got := run("spa").GetOutput().GetStructValue().GetFields()["visits"].GetStringValue(); got != "1" {
		t.Fatalf("first visit counted %q, want 1", got)
	}
	n, rev := visits(0)
	if n != 1 {
		t.Fatalf("stored visits %v after the first visit, want 1", n)
	}
	// Runs that leave IndexedDB alone write back their rotated cookies: the state keeps
	// the database.
	run("list-invoices")
	run("list-invoices")
	if n, rev = visits(rev); n != 1 {
		t.Fatalf("stored visits %v after two Runs that did not touch IndexedDB, want 1", n)
	}
	if got := run("spa").GetOutput().GetStructValue().GetFields()["visits"].GetStringValue(); got != "2" {
		t.Fatalf("second visit counted %q, want 2", got)
	}
	if n, _ = visits(rev); n != 2 {
		t.Fatalf("stored visits %v after the second visit in the warm context, want 2", n)
	}
}
