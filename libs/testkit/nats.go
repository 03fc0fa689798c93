package testkit

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/libs/bus"
)

// NATS starts an embedded NATS server with JetStream on a random port,
// storing under a temporary directory, declares every Latchkey stream and
// bucket, and connects to it. The connection and the server are closed when
// the test ends. Tests that publish on their own connections use url.
func NATS(t testing.TB) (url string, nc *nats.Conn, js jetstream.JetStream) {
	t.Helper()
	ctx := t.Context()
	srv, err := bus.StartEmbedded(ctx, bus.EmbeddedConfig{Port: bus.RandomPort, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("testkit: starting embedded nats: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	nc, js, err = bus.Connect(ctx, bus.ConnectOptions{URL: srv.ClientURL(), Name: "testkit-" + t.Name()})
	if err != nil {
		t.Fatalf("testkit: connecting to embedded nats: %v", err)
	}
	t.Cleanup(nc.Close)
	if err := bus.Ensure(ctx, js, bus.Options{}); err != nil {
		t.Fatalf("testkit: declaring streams and buckets: %v", err)
	}
	return srv.ClientURL(), nc, js
}
