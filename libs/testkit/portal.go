package testkit

import (
	"testing"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
)

// Portal starts the demo portal in-process on a random loopback port, closed when the
// test ends, and returns it with its base URL.
//
// Deprecated: use portaltest.Start (examples/portal/portaltest). A lib must not import
// an example; this is kept only for libs/runner's tests, which another change is
// moving.
//
// TODO(test-hygiene): delete this file, and its allowances in
// services/boundaries_test.go, once libs/runner's tests call portaltest.Start.
func Portal(tb testing.TB, cfg portal.Config) (*portal.Portal, string) {
	tb.Helper()
	return portaltest.Start(tb, cfg)
}
