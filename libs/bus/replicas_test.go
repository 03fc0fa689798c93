package bus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/testkit"
)

// allStreams are the streams Ensure declares, with those behind the KV buckets
// and object stores.
var allStreams = []string{
	bus.StreamRuns, bus.StreamTasks, bus.StreamResults, bus.StreamEvents, bus.StreamAudit,
	"KV_" + bus.BucketProjects, "KV_" + bus.BucketAPIKeys, "KV_" + bus.BucketAutomations,
	"KV_" + bus.BucketSessions, "KV_" + bus.BucketStates, "KV_" + bus.BucketSecrets,
	"KV_" + bus.BucketRuns, "KV_" + bus.BucketJobs, "KV_" + bus.BucketLeases, "KV_" + bus.BucketRecordings, "KV_" + bus.BucketTOTP,
	"OBJ_" + bus.ObjectStates, "OBJ_" + bus.ObjectArtifacts,
}

// connectCluster connects to every server of c.
func connectCluster(t *testing.T, c *testkit.NATSClusterServers) jetstream.JetStream {
	t.Helper()
	nc, js, err := bus.Connect(t.Context(), bus.ConnectOptions{URL: c.URL(), Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return js
}

// assertReplicas checks that every stream and bucket is configured for want
// replicas and, eventually, has that many current copies; and that no stream
// Ensure did not declare exists.
func assertReplicas(t *testing.T, js jetstream.JetStream, want int) {
	t.Helper()
	ctx := t.Context()
	names := js.StreamNames(ctx)
	var count int
	for range names.Name() {
		count++
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	if count != len(allStreams) {
		t.Errorf("%d streams, want %d", count, len(allStreams))
	}
	for _, name := range allStreams {
		testkit.Eventually(t, 20*time.Second, func() (bool, string) {
			s, err := js.Stream(ctx, name)
			if err != nil {
				return false, fmt.Sprintf("stream %s: %v", name, err)
			}
			info := s.CachedInfo()
			current := 0
			if info.Cluster != nil && info.Cluster.Leader != "" {
				current = 1
				for _, p := range info.Cluster.Replicas {
					if p.Current {
						current++
					}
				}
			}
			// A replicated bucket reads from its leader, so a read sees the write before it.
			direct := strings.HasPrefix(name, "KV_") && want > 1 && info.Config.AllowDirect
			return info.Config.Replicas == want && current == want && !direct,
				fmt.Sprintf("stream %s: %d replicas configured, %d current, direct gets %v; want %d, no direct gets for KV", name, info.Config.Replicas, current, info.Config.AllowDirect, want)
		})
	}
	// The bucket APIs report the same, as operators see them.
	for _, name := range []string{bus.BucketSessions, bus.BucketLeases, bus.BucketSecrets} {
		kv, err := js.KeyValue(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas; got != want {
			t.Errorf("kv %s status: %d replicas, want %d", name, got, want)
		}
	}
	for _, name := range []string{bus.ObjectStates, bus.ObjectArtifacts} {
		obs, err := js.ObjectStore(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		st, err := obs.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Replicas(); got != want {
			t.Errorf("object store %s status: %d replicas, want %d", name, got, want)
		}
	}
}

// TestEnsureReplicatesOnACluster: with Replicas 3 on a 3-node JetStream cluster
// every stream and bucket has 3 copies; 5 is refused, naming the cluster, before
// anything is made.
func TestEnsureReplicatesOnACluster(t *testing.T) {
	t.Parallel()
	js := connectCluster(t, testkit.NATSCluster(t, 3))
	ctx := t.Context()

	// A cluster that cannot place the copies may still be forming: Ensure waits for
	// it up to ReadyTimeout, then explains.
	start := time.Now()
	err := bus.Ensure(ctx, js, bus.Options{Replicas: 5, ReadyTimeout: 2 * time.Second})
	if waited := time.Since(start); waited < time.Second {
		t.Errorf("Ensure gave up on 5 replicas after %s, before its ReadyTimeout", waited)
	}
	if !errors.Is(err, bus.ErrTooManyReplicas) || !strings.Contains(err.Error(), `5 replicas need at least 5 servers`) ||
		!strings.Contains(err.Error(), "latchkey-test") {
		t.Fatalf("Ensure with 5 replicas on 3 servers: got %v, want ErrTooManyReplicas naming the cluster", err)
	}
	if _, err := js.Stream(ctx, bus.StreamRuns); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("after the refused Ensure, stream %s: %v; want none made", bus.StreamRuns, err)
	}

	if err := bus.Ensure(ctx, js, bus.Options{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	assertReplicas(t, js, 3)
}

// TestEnsureRaisesReplicasAndNeverLowersThem: streams and buckets made with one
// replica on a cluster grow to 3 when Ensure asks for 3, keep their messages,
// and stay at 3 when a service with the default (1) calls Ensure again.
func TestEnsureRaisesReplicasAndNeverLowersThem(t *testing.T) {
	t.Parallel()
	js := connectCluster(t, testkit.NATSCluster(t, 3))
	ctx := t.Context()

	if err := bus.Ensure(ctx, js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	assertReplicas(t, js, 1)
	kv, err := js.KeyValue(ctx, bus.BucketSessions)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "proj1.sess1", []byte("ready")); err != nil {
		t.Fatal(err)
	}

	if err := bus.Ensure(ctx, js, bus.Options{Replicas: 3}); err != nil {
		t.Fatalf("Ensure raising replicas to 3: %v", err)
	}
	assertReplicas(t, js, 3)
	// Growing turns direct gets off (reads go to the leader): a bucket handle bound
	// before still asks for them, so services are restarted after the change, as
	// changing LATCHKEY_NATS_REPLICAS does anyway.
	if kv, err = js.KeyValue(ctx, bus.BucketSessions); err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "proj1.sess1"); err != nil || string(e.Value()) != "ready" {
		t.Fatalf("session after growing the bucket: %v", err)
	}

	var logs testkit.SyncBuffer
	if err := bus.Ensure(ctx, js, bus.Options{Replicas: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
		t.Fatalf("Ensure with 1 replica after 3: %v", err)
	}
	assertReplicas(t, js, 3)
	if got := strings.Count(logs.String(), "Ensure never lowers them"); got != len(allStreams) {
		t.Errorf("%d warnings of streams keeping their replicas, want %d:\n%s", got, len(allStreams), logs.String())
	}
}

func TestEnsureRefusesReplicasOnOneServer(t *testing.T) {
	t.Parallel()
	srv, _, js := startServer(t)
	err := bus.Ensure(t.Context(), js, bus.Options{Replicas: 3})
	if !errors.Is(err, bus.ErrTooManyReplicas) || !strings.Contains(err.Error(), "runs alone") ||
		!strings.Contains(err.Error(), srv.ClientURL()) {
		t.Fatalf("Ensure with 3 replicas on one server: got %v, want ErrTooManyReplicas saying it runs alone", err)
	}
	if _, err := js.Stream(context.WithoutCancel(t.Context()), bus.StreamRuns); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("after the refused Ensure, stream %s: %v; want none made", bus.StreamRuns, err)
	}
}

// TestEnsureFromServicesStartingTogether: every service declares every stream and
// bucket at start-up, so on a fresh cluster several create the same replicated
// streams at once, through different servers. Each must end up with everything
// declared, with 3 replicas, well within Ensure's ReadyTimeout.
func TestEnsureFromServicesStartingTogether(t *testing.T) {
	t.Parallel()
	c := testkit.NATSCluster(t, 3)
	errs := make(chan error, 2)
	start := time.Now()
	for i := range 2 {
		go func() {
			nc, js, err := bus.Connect(t.Context(), bus.ConnectOptions{URL: c.ClientURL(i + 1), Name: fmt.Sprintf("service-%d", i)})
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			errs <- bus.Ensure(t.Context(), js, bus.Options{Replicas: 3})
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("Ensure from one of two services starting together: %v", err)
		}
	}
	t.Logf("both services declared everything in %s", time.Since(start).Round(time.Millisecond))
	assertReplicas(t, connectCluster(t, c), 3)
}
