package engine

import (
	"crypto/sha256"
	"time"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// digestOf is the digest by which a context remembers which sealed state it holds.
func digestOf(ciphertext []byte) [32]byte { return sha256.Sum256(ciphertext) }

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
