package testkit

import (
	"testing"
	"time"
)

// TOTPStep is the length of a TOTP time step (RFC 6238's default, the portal's).
const TOTPStep = 30 * time.Second

// FreshTOTPStep waits, if need be, until at least left remains of the current TOTP
// time step, and returns that step's number. Tests of single-use codes need their
// logins to fall in one step; the wait is for a wall-clock boundary, not for a
// condition to poll.
func FreshTOTPStep(t testing.TB, left time.Duration) int64 {
	t.Helper()
	now := time.Now()
	if rem := TOTPStep - time.Duration(now.UnixNano()%int64(TOTPStep)); rem < left {
		t.Logf("waiting %s for a new TOTP time step", rem.Round(time.Millisecond))
		time.Sleep(rem + 200*time.Millisecond)
	}
	return time.Now().Unix() / int64(TOTPStep/time.Second)
}
