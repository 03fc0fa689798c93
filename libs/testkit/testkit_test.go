package testkit_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/libs/browser"
	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testkit.LibraryGoroutines()...)
}

func TestNATS(t *testing.T) {
	t.Parallel()
	url, nc, js := testkit.NATS(t)
	ctx := t.Context()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || !nc.IsConnected() {
		t.Fatalf("url %q connected %v", url, nc.IsConnected())
	}
	subject, err := bus.AuditSubject("proj1")
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, subject, []byte("decrypt"))
	if err != nil {
		t.Fatalf("publish to %s: %v", subject, err)
	}
	if ack.Stream != bus.StreamAudit {
		t.Errorf("stored in %s, want %s", ack.Stream, bus.StreamAudit)
	}
	kv, err := js.KeyValue(ctx, bus.BucketSessions)
	if err != nil {
		t.Fatal(err)
	}
	key, err := bus.SessionKey("proj1", "sess1")
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Create(ctx, key, []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, key, []byte("v2"), rev); err != nil {
		t.Fatalf("compare-and-swap update: %v", err)
	}
	if _, err := kv.Update(ctx, key, []byte("v3"), rev); err == nil {
		t.Error("update on a stale revision succeeded")
	}
	if _, err := js.ObjectStore(ctx, bus.ObjectArtifacts); err != nil {
		t.Errorf("object store %s: %v", bus.ObjectArtifacts, err)
	}
	var _ jetstream.JetStream = js
}

func TestRedis(t *testing.T) {
	t.Parallel()
	srv := testkit.Redis(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = client.Close() })
	ctx := t.Context()
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	if srv.URL() != "redis://"+srv.Addr {
		t.Errorf("URL() = %q", srv.URL())
	}
	srv.Stop()
	srv.Stop() // idempotent
	if err := client.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded after Stop")
	}
}

func TestChromium(t *testing.T) {
	t.Parallel()
	path := testkit.ChromiumPath(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", path, err)
	}
	if !strings.Contains(string(out), "Chrom") {
		t.Errorf("%s --version printed %q", path, out)
	}

	// The shared flags start a headless browser that needs no network.
	args := append(browser.Flags(), "--user-data-dir="+t.TempDir(), "--dump-dom",
		"data:text/html,<p id=x>latchkey</p>")
	out, err = exec.CommandContext(ctx, path, args...).Output()
	if err != nil {
		t.Fatalf("headless chromium: %v", err)
	}
	if !strings.Contains(string(out), `<p id="x">latchkey</p>`) {
		t.Errorf("headless chromium dumped %q", out)
	}
}

func TestBrowserAllocatorOptions(t *testing.T) {
	t.Parallel()
	if got, want := len(browser.AllocatorOptions()), len(browser.Flags()); got != want {
		t.Errorf("%d allocator options for %d flags", got, want)
	}
}

// TestNATSCluster: a 3-server cluster keeps a 3-replica stream writable after one
// server is stopped.
func TestNATSCluster(t *testing.T) {
	t.Parallel()
	c := testkit.NATSCluster(t, 3)
	if c.Size() != 3 || strings.Count(c.URL(), ",") != 2 {
		t.Fatalf("size %d, URL %q", c.Size(), c.URL())
	}
	nc, js, err := bus.Connect(t.Context(), bus.ConnectOptions{URL: c.URL(), Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t", []byte("1")); err != nil {
		t.Fatal(err)
	}
	c.Stop(0)
	c.Stop(0) // a second stop is harmless
	testkit.Eventually(t, 20*time.Second, func() (bool, string) {
		_, err := js.Publish(ctx, "t", []byte("2"))
		return err == nil, fmt.Sprintf("publish with one server stopped: %v", err)
	})
}
