package bus_test

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testkit.LibraryGoroutines()...)
}

// startServer runs an embedded server for one test and connects to it.
func startServer(t testing.TB) (*bus.Embedded, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	ctx := t.Context()
	srv, err := bus.StartEmbedded(ctx, bus.EmbeddedConfig{Port: bus.RandomPort, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	nc, js, err := bus.Connect(ctx, bus.ConnectOptions{URL: srv.ClientURL(), Name: t.Name()})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return srv, nc, js
}

func TestStartEmbeddedPortInUse(t *testing.T) {
	t.Parallel()
	first, _, _ := startServer(t)
	u, err := url.Parse(first.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	_, err = bus.StartEmbedded(t.Context(), bus.EmbeddedConfig{
		Port: port, StoreDir: t.TempDir(), ReadyTimeout: 500 * time.Millisecond,
	})
	if !errors.Is(err, bus.ErrEmbeddedNotReady) {
		t.Fatalf("StartEmbedded on a used port: got %v, want ErrEmbeddedNotReady", err)
	}
	t.Logf("error reads: %v", err)
}

func TestStartEmbeddedNeedsStoreDir(t *testing.T) {
	t.Parallel()
	if _, err := bus.StartEmbedded(t.Context(), bus.EmbeddedConfig{Port: bus.RandomPort}); err == nil {
		t.Fatal("StartEmbedded without StoreDir: got nil error")
	}
}

func TestConnectGivesUpWithContext(t *testing.T) {
	t.Parallel()
	srv, nc, _ := startServer(t)
	url := srv.ClientURL()
	nc.Close()
	srv.Shutdown()

	ctx, cancel := context.WithTimeout(t.Context(), 700*time.Millisecond)
	defer cancel()
	_, _, err := bus.Connect(ctx, bus.ConnectOptions{URL: url, Name: "nobody-home"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect to a stopped server: got %v, want context.DeadlineExceeded", err)
	}
}
