package storagestate

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/proto"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// PlaywrightDatabase is one IndexedDB database in Playwright's storageState (1.51 and
// later). The runner's capture and restore scripts read and write this shape too.
type PlaywrightDatabase struct {
	Name    string            `json:"name"`
	Version int64             `json:"version"`
	Stores  []PlaywrightStore `json:"stores"`
}

type PlaywrightStore struct {
	Name          string             `json:"name"`
	AutoIncrement bool               `json:"autoIncrement"`
	KeyPath       string             `json:"keyPath,omitempty"`
	KeyPathArray  []string           `json:"keyPathArray,omitempty"`
	Records       []PlaywrightRecord `json:"records"`
	Indexes       []PlaywrightIndex  `json:"indexes"`
}

type PlaywrightIndex struct {
	Name         string   `json:"name"`
	KeyPath      string   `json:"keyPath,omitempty"`
	KeyPathArray []string `json:"keyPathArray,omitempty"`
	MultiEntry   bool     `json:"multiEntry"`
	Unique       bool     `json:"unique"`
}

// PlaywrightRecord keeps each part as the JSON it was written as.
type PlaywrightRecord struct {
	Key          json.RawMessage `json:"key,omitempty"`
	KeyEncoded   json.RawMessage `json:"keyEncoded,omitempty"`
	Value        json.RawMessage `json:"value,omitempty"`
	ValueEncoded json.RawMessage `json:"valueEncoded,omitempty"`
}

// DatabasesFromPlaywright converts databases in Playwright's shape.
func DatabasesFromPlaywright(dbs []PlaywrightDatabase) []*latchkeyv1.IndexedDBDatabase {
	var out []*latchkeyv1.IndexedDBDatabase
	for _, d := range dbs {
		db := &latchkeyv1.IndexedDBDatabase{Name: d.Name, Version: d.Version}
		for _, s := range d.Stores {
			st := &latchkeyv1.IndexedDBStore{Name: s.Name, AutoIncrement: s.AutoIncrement, KeyPath: s.KeyPath, KeyPathArray: s.KeyPathArray}
			for _, i := range s.Indexes {
				st.Indexes = append(st.Indexes, &latchkeyv1.IndexedDBIndex{Name: i.Name, KeyPath: i.KeyPath, KeyPathArray: i.KeyPathArray, MultiEntry: i.MultiEntry, Unique: i.Unique})
			}
			for _, r := range s.Records {
				st.Records = append(st.Records, &latchkeyv1.IndexedDBRecord{
					Key: string(r.Key), KeyEncoded: string(r.KeyEncoded), Value: string(r.Value), ValueEncoded: string(r.ValueEncoded),
				})
			}
			db.Stores = append(db.Stores, st)
		}
		out = append(out, db)
	}
	return out
}

// DatabasesToPlaywright converts databases to Playwright's shape.
func DatabasesToPlaywright(dbs []*latchkeyv1.IndexedDBDatabase) []PlaywrightDatabase {
	var out []PlaywrightDatabase
	for _, d := range dbs {
		db := PlaywrightDatabase{Name: d.GetName(), Version: d.GetVersion(), Stores: []PlaywrightStore{}}
		for _, s := range d.GetStores() {
			st := PlaywrightStore{Name: s.GetName(), AutoIncrement: s.GetAutoIncrement(), KeyPath: s.GetKeyPath(), KeyPathArray: s.GetKeyPathArray(), Records: []PlaywrightRecord{}, Indexes: []PlaywrightIndex{}}
			for _, i := range s.GetIndexes() {
				st.Indexes = append(st.Indexes, PlaywrightIndex{Name: i.GetName(), KeyPath: i.GetKeyPath(), KeyPathArray: i.GetKeyPathArray(), MultiEntry: i.GetMultiEntry(), Unique: i.GetUnique()})
			}
			for _, r := range s.GetRecords() {
				st.Records = append(st.Records, PlaywrightRecord{Key: raw(r.GetKey()), KeyEncoded: raw(r.GetKeyEncoded()), Value: raw(r.GetValue()), ValueEncoded: raw(r.GetValueEncoded())})
			}
			db.Stores = append(db.Stores, st)
		}
		out = append(out, db)
	}
	return out
}

func raw(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}

// validateDatabases checks an origin's IndexedDB: named, unique databases and stores,
// one key path form, every record part valid JSON, one value per record.
func validateDatabases(dbs []*latchkeyv1.IndexedDBDatabase) error {
	names := map[string]bool{}
	for _, d := range dbs {
		if d.GetName() == "" || names[d.GetName()] {
			return fmt.Errorf("%w: IndexedDB database %.64q is unnamed or appears twice", ErrInvalid, d.GetName())
		}
		names[d.GetName()] = true
		if d.GetVersion() < 1 {
			return fmt.Errorf("%w: IndexedDB database %.64q has version %d, want 1 or more", ErrInvalid, d.GetName(), d.GetVersion())
		}
		stores := map[string]bool{}
		for _, s := range d.GetStores() {
			if s.GetName() == "" || stores[s.GetName()] {
				return fmt.Errorf("%w: IndexedDB store %.64q of %.64q is unnamed or appears twice", ErrInvalid, s.GetName(), d.GetName())
			}
			stores[s.GetName()] = true
			if s.GetKeyPath() != "" && len(s.GetKeyPathArray()) > 0 {
				return fmt.Errorf("%w: IndexedDB store %.64q has both keyPath and keyPathArray", ErrInvalid, s.GetName())
			}
			for j, r := range s.GetRecords() {
				if (r.GetValue() == "") == (r.GetValueEncoded() == "") {
					return fmt.Errorf("%w: record %d of IndexedDB store %.64q needs exactly one of value and valueEncoded", ErrInvalid, j, s.GetName())
				}
				for _, part := range []string{r.GetKey(), r.GetKeyEncoded(), r.GetValue(), r.GetValueEncoded()} {
					if part != "" && !json.Valid([]byte(part)) {
						return fmt.Errorf("%w: record %d of IndexedDB store %.64q is not JSON", ErrInvalid, j, s.GetName())
					}
				}
			}
		}
	}
	return nil
}

// mergeDatabases merges an origin's IndexedDB by database, as mergeItems merges
// storage items: a database mine changed (or added) since base is mine's; one mine
// removed is dropped unless current changed it too; every other is current's.
func mergeDatabases(base, current, mine []*latchkeyv1.IndexedDBDatabase) []*latchkeyv1.IndexedDBDatabase {
	byName := func(dbs []*latchkeyv1.IndexedDBDatabase) map[string]*latchkeyv1.IndexedDBDatabase {
		m := make(map[string]*latchkeyv1.IndexedDBDatabase, len(dbs))
		for _, d := range dbs {
			m[d.GetName()] = d
		}
		return m
	}
	b, m := byName(base), byName(mine)
	var out []*latchkeyv1.IndexedDBDatabase
	seen := map[string]bool{}
	for _, c := range current {
		seen[c.GetName()] = true
		bd, md := b[c.GetName()], m[c.GetName()]
		switch {
		case md != nil && !proto.Equal(md, bd):
			out = append(out, md)
		case md == nil && bd != nil && proto.Equal(c, bd):
			// mine deleted it and current did not touch it
		default:
			out = append(out, c)
		}
	}
	for _, md := range mine {
		if !seen[md.GetName()] && !proto.Equal(md, b[md.GetName()]) {
			out = append(out, md)
		}
	}
	return out
}
