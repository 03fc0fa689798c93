package server

import (
	"context"
	"testing"
	"time"

	"github.com/latchkey/latchkey/libs/logging"
)

// NewForTests returns a Server on random loopback ports, shut down when the test ends.
// Register services, then Start it.
func NewForTests(tb testing.TB, auth *Authenticator) *Server {
	tb.Helper()
	s, err := New(Options{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Logger: logging.Discard(), Auth: auth})
	if err != nil {
		tb.Fatalf("server.New: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}
