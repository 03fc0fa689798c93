package testkit

import (
	"testing"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
)

// Portal starts the demo portal in-process on a random loopback port, closed when the
// test ends, and returns it with its base URL.
func Portal(tb testing.TB, cfg portal.Config) (*portal.Portal, string) {
	tb.Helper()
	return portaltest.Start(tb, cfg)
}
