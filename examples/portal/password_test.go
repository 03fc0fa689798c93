package portal_test

import (
	"net/http"
	"testing"

	"github.com/latchkey/latchkey/examples/portal"
)

// TestSetPasswordRejectsTheOldOne: after a password change the old password is an
// invalid login (counted as failed) and the new one works; a session issued before
// the change stays valid.
func TestSetPasswordRejectsTheOldOne(t *testing.T) {
	t.Parallel()
	p, base := startPortal(t, portal.Config{})
	before := sessionCookie(t, base, portal.AliceUsername, portal.AlicePassword)
	if err := p.SetPassword(portal.AliceUsername, "through-the-looking-glass"); err != nil {
		t.Fatal(err)
	}
	if err := p.SetPassword("mallory", "x"); err == nil {
		t.Error("SetPassword of an unknown user succeeded")
	}
	failed := p.Counters().FailedLogins
	r, _, err := tryLogin(base, portal.AliceUsername, portal.AlicePassword)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusUnauthorized || loginError(r.body) != "Invalid username or password" {
		t.Errorf("old password: status %d, error %q; want 401 Invalid username or password", r.status, loginError(r.body))
	}
	if got := p.Counters().FailedLogins - failed; got != 1 {
		t.Errorf("failed logins = %d, want 1", got)
	}
	sessionCookie(t, base, portal.AliceUsername, "through-the-looking-glass")
	if r := send(t, http.MethodGet, base+"/api/me", nil, withCookies(before)); r.status != http.StatusOK {
		t.Errorf("a session issued before the change: /api/me status %d, want 200", r.status)
	}
}
