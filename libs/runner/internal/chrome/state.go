package chrome

import (
	"math"
	"slices"
	"strings"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/storagestate"
)

// Normalize sorts a state and rounds cookie expiries to whole seconds, so that the
// same state always encodes to the same bytes and a restore-capture round trip is
// no change.
func Normalize(st *latchkeyv1.StorageState) {
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

// SameState reports whether two states hold the same cookies and storage.
func SameState(a, b *latchkeyv1.StorageState) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	na, nb := cloneState(a), cloneState(b)
	Normalize(na)
	Normalize(nb)
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
