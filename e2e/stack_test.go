// Package e2e holds the end-to-end tests: whole stacks of services started in-process
// (internal/stack/stacktest), driven over gRPC and NATS against real NATS JetStream,
// Redis, Chromium and the demo portal, as users drive them.
package e2e

import (
	"testing"

	"go.uber.org/goleak"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	"github.com/latchkey/latchkey/libs/testkit"
)

// TestMain checks for leaked goroutines (but the libraries' own, see
// testkit.LibraryGoroutines).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testkit.LibraryGoroutines()...)
}

func TestStackWithRedisIsHealthy(t *testing.T) {
	t.Parallel()
	redis := testkit.Redis(t)
	st := stacktest.Start(t, stacktest.Options{Env: map[string]string{"LATCHKEY_REDIS_URL": redis.URL()}})
	r, err := healthpb.NewHealthClient(st.Dial(t, "")).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v\nlogs:\n%s", r.GetStatus(), err, st.Logs)
	}
}
