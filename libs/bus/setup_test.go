package bus_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/testkit"
)

func TestEnsureIsIdempotent(t *testing.T) {
	t.Parallel()
	_, _, js := startServer(t)
	ctx := t.Context()

	for i := range 2 {
		if err := bus.Ensure(ctx, js, bus.Options{}); err != nil {
			t.Fatalf("Ensure call %d: %v", i+1, err)
		}
	}

	streams := []struct {
		name      string
		subject   string
		retention jetstream.RetentionPolicy
		maxAge    time.Duration
	}{
		{bus.StreamRuns, "lk.runs.requests.>", jetstream.WorkQueuePolicy, bus.DefaultWorkQueueMaxAge},
		{bus.StreamTasks, "lk.tasks.>", jetstream.WorkQueuePolicy, bus.DefaultWorkQueueMaxAge},
		{bus.StreamResults, "lk.results.>", jetstream.WorkQueuePolicy, bus.DefaultWorkQueueMaxAge},
		{bus.StreamEvents, "lk.events.>", jetstream.LimitsPolicy, bus.DefaultEventsMaxAge},
		{bus.StreamAudit, "lk.audit.>", jetstream.LimitsPolicy, bus.DefaultAuditMaxAge},
	}
	for _, want := range streams {
		s, err := js.Stream(ctx, want.name)
		if err != nil {
			t.Fatalf("stream %s: %v", want.name, err)
		}
		cfg := s.CachedInfo().Config
		if !slices.Equal(cfg.Subjects, []string{want.subject}) || cfg.Retention != want.retention ||
			cfg.MaxAge != want.maxAge || cfg.Storage != jetstream.FileStorage || cfg.Replicas != 1 {
			t.Errorf("stream %s: subjects %v retention %v max age %v storage %v replicas %d; want %s %v %v file 1",
				want.name, cfg.Subjects, cfg.Retention, cfg.MaxAge, cfg.Storage, cfg.Replicas,
				want.subject, want.retention, want.maxAge)
		}
	}

	buckets := []struct {
		name string
		ttl  time.Duration
	}{
		{bus.BucketProjects, 0},
		{bus.BucketAPIKeys, 0},
		{bus.BucketAutomations, 0},
		{bus.BucketSessions, 0},
		{bus.BucketStates, 0},
		{bus.BucketSecrets, 0},
		{bus.BucketRuns, bus.DefaultRunRecordsMaxAge},
		{bus.BucketJobs, 0},
		{bus.BucketLeases, bus.DefaultLeaseTTL},
		{bus.BucketRecordings, bus.RecordingsMaxAge},
		{bus.BucketTOTP, bus.TOTPMaxAge},
	}
	for _, want := range buckets {
		kv, err := js.KeyValue(ctx, want.name)
		if err != nil {
			t.Fatalf("kv %s: %v", want.name, err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatalf("kv %s status: %v", want.name, err)
		}
		if st.TTL() != want.ttl {
			t.Errorf("kv %s: ttl %v, want %v", want.name, st.TTL(), want.ttl)
		}
	}

	objects := []struct {
		name string
		ttl  time.Duration
	}{
		{bus.ObjectStates, 0},
		{bus.ObjectArtifacts, bus.DefaultArtifactsTTL},
	}
	for _, want := range objects {
		obs, err := js.ObjectStore(ctx, want.name)
		if err != nil {
			t.Fatalf("object store %s: %v", want.name, err)
		}
		st, err := obs.Status(ctx)
		if err != nil {
			t.Fatalf("object store %s status: %v", want.name, err)
		}
		if st.TTL() != want.ttl {
			t.Errorf("object store %s: ttl %v, want %v", want.name, st.TTL(), want.ttl)
		}
	}

	// The KV bucket LK_RUNS lives in stream KV_LK_RUNS, beside stream LK_RUNS.
	if _, err := js.Stream(ctx, "KV_"+bus.BucketRuns); err != nil {
		t.Errorf("stream behind kv %s: %v", bus.BucketRuns, err)
	}

	// A changed option updates in place.
	if err := bus.Ensure(ctx, js, bus.Options{EventsMaxAge: 48 * time.Hour}); err != nil {
		t.Fatalf("Ensure with new events max age: %v", err)
	}
	s, err := js.Stream(ctx, bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != 48*time.Hour {
		t.Errorf("events max age after update: %v, want 48h", got)
	}
}

func TestEnsureRejectsBadOptions(t *testing.T) {
	t.Parallel()
	_, _, js := startServer(t)
	tests := []struct {
		name string
		opts bus.Options
	}{
		{"too many replicas", bus.Options{Replicas: 7}},
		{"negative replicas", bus.Options{Replicas: -1}},
		{"lease ttl under a second", bus.Options{LeaseTTL: 10 * time.Millisecond}},
		{"dedup longer than work queue age", bus.Options{DedupWindow: 2 * time.Hour, WorkQueueMaxAge: time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := bus.Ensure(t.Context(), js, tt.opts); !errors.Is(err, bus.ErrInvalidOptions) {
				t.Fatalf("Ensure: got %v, want ErrInvalidOptions", err)
			}
		})
	}
}

func TestRunRequestsDeduplicateByMsgID(t *testing.T) {
	t.Parallel()
	_, _, js := startServer(t)
	ctx := t.Context()
	if err := bus.Ensure(ctx, js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	subject, err := bus.RunRequestSubject("proj1")
	if err != nil {
		t.Fatal(err)
	}
	prop := bus.Propagator()
	for i, wantDup := range []bool{false, true, true} {
		ack, err := js.PublishMsg(ctx, bus.NewMsg(ctx, prop, subject, []byte("req"), "run-42"))
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if ack.Stream != bus.StreamRuns || ack.Duplicate != wantDup {
			t.Errorf("publish %d: stream %s duplicate %v, want %s %v", i, ack.Stream, ack.Duplicate, bus.StreamRuns, wantDup)
		}
	}
	if _, err := js.PublishMsg(ctx, bus.NewMsg(ctx, prop, subject, []byte("req"), "run-43")); err != nil {
		t.Fatal(err)
	}

	stream, err := js.Stream(ctx, bus.StreamRuns)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("LK_RUNS holds %d messages, want 2", info.State.Msgs)
	}

	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "scheduler", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(10, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for msg := range batch.Messages() {
		ids = append(ids, msg.Headers().Get(bus.HeaderMsgID))
		if err := msg.DoubleAck(ctx); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	if err := batch.Error(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, []string{"run-42", "run-43"}) {
		t.Errorf("consumed ids %v, want [run-42 run-43]", ids)
	}
	// Work-queue retention: acked messages are gone.
	if info, err = stream.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Errorf("LK_RUNS holds %d messages after acks, want 0", info.State.Msgs)
	}
}

func TestLeasesExpire(t *testing.T) {
	t.Parallel()
	_, _, js := startServer(t)
	ctx := t.Context()
	if err := bus.Ensure(ctx, js, bus.Options{LeaseTTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, bus.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "proj1.sess1", []byte("scheduler-a")); err != nil {
		t.Fatal(err)
	}
	// A second holder is refused while the lease lives.
	if _, err := kv.Create(ctx, "proj1.sess1", []byte("scheduler-b")); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("second Create: got %v, want ErrKeyExists", err)
	}
	testkit.Eventually(t, 5*time.Second, func() (bool, string) {
		_, err := kv.Create(ctx, "proj1.sess1", []byte("scheduler-b"))
		return err == nil, fmt.Sprintf("the lease is still held: %v", err)
	})
}

// TestALeaseLivesByItsOwnTTL: with the default bucket, a lease taken with its own TTL
// (as the scheduler's recreate lease, 5 minutes, and refresh round are) expires by that
// TTL, and the bucket's age limit is no shorter than the longest lease Latchkey takes:
// a 30 s bucket age once cut the 5-minute recreate lease to 30 s.
func TestALeaseLivesByItsOwnTTL(t *testing.T) {
	t.Parallel()
	_, _, js := startServer(t)
	ctx := t.Context()
	if err := bus.Ensure(ctx, js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, bus.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() < 10*time.Minute {
		t.Fatalf("LK_LEASES keeps a key at most %s: shorter than a 5-minute recreate lease", st.TTL())
	}
	if _, err := kv.Create(ctx, "short", []byte("a"), jetstream.KeyTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "long", []byte("a"), jetstream.KeyTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() (bool, string) {
		_, err := kv.Get(ctx, "short")
		return errors.Is(err, jetstream.ErrKeyNotFound), fmt.Sprintf("a lease with a 1 s TTL still exists (get: %v)", err)
	})
	if _, err := kv.Get(ctx, "long"); err != nil {
		t.Fatalf("the 1-hour lease is gone with the 1-second one: %v", err)
	}
}
