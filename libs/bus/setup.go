package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of Options.
const (
	DefaultReplicas         = 1
	DefaultDedupWindow      = 2 * time.Minute
	DefaultWorkQueueMaxAge  = 24 * time.Hour
	DefaultEventsMaxAge     = 7 * 24 * time.Hour
	DefaultAuditMaxAge      = 365 * 24 * time.Hour
	DefaultRunRecordsMaxAge = 30 * 24 * time.Hour
	DefaultLeaseTTL         = time.Hour
	DefaultArtifactsTTL     = 7 * 24 * time.Hour
	// RecordingsMaxAge is how long LK_RECORDINGS keeps the claim of a recorder
	// URL: longer than any recorder URL lives, so a claimed URL stays claimed.
	RecordingsMaxAge = 2 * time.Hour
	// TOTPMaxAge is how long LK_TOTP keeps a session's last TOTP time step after it
	// was written: a step matters only until it is past, a minute or two at most.
	TOTPMaxAge = 10 * time.Minute
)

// ErrInvalidOptions is returned by Ensure for options it cannot apply.
var ErrInvalidOptions = errors.New("invalid jetstream options")

// Options tunes the streams and buckets Ensure declares. Zero values take
// the defaults above.
type Options struct {
	// Replicas of every stream and bucket: 1 on one server, 3 on a cluster.
	Replicas int
	// DedupWindow is how long LK_RUNS and LK_TASKS remember Nats-Msg-Id.
	DedupWindow time.Duration
	// WorkQueueMaxAge drops work (run requests, tasks, results) nobody took
	// for this long.
	WorkQueueMaxAge time.Duration
	// EventsMaxAge is how long LK_EVENTS keeps state changes.
	EventsMaxAge time.Duration
	// AuditMaxAge is how long LK_AUDIT keeps audit records.
	AuditMaxAge time.Duration
	// RunRecordsMaxAge is how long the LK_RUNS bucket keeps a Run record
	// after its last update.
	RunRecordsMaxAge time.Duration
	// LeaseTTL is the longest an LK_LEASES key lives since its last update (the
	// bucket's age limit); every lease Latchkey takes sets its own shorter TTL with
	// jetstream.KeyTTL on Create. The age limit wins over a longer key TTL, so it must
	// be no shorter than the longest lease (the 5-minute recreate lease).
	LeaseTTL time.Duration
	// ArtifactsTTL is how long LK_ARTIFACTS keeps failure screenshots.
	ArtifactsTTL time.Duration
}

// withDefaults fills zero fields and rejects impossible ones.
func (o Options) withDefaults() (Options, error) {
	if o.Replicas == 0 {
		o.Replicas = DefaultReplicas
	}
	if o.Replicas < 1 || o.Replicas > 5 {
		return o, fmt.Errorf("%w: replicas must be 1 to 5, got %d", ErrInvalidOptions, o.Replicas)
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
		min  time.Duration
	}{
		{"dedup window", &o.DedupWindow, DefaultDedupWindow, time.Second},
		{"work queue max age", &o.WorkQueueMaxAge, DefaultWorkQueueMaxAge, time.Minute},
		{"events max age", &o.EventsMaxAge, DefaultEventsMaxAge, time.Minute},
		{"audit max age", &o.AuditMaxAge, DefaultAuditMaxAge, time.Minute},
		{"run records max age", &o.RunRecordsMaxAge, DefaultRunRecordsMaxAge, time.Minute},
		{"lease ttl", &o.LeaseTTL, DefaultLeaseTTL, time.Second},
		{"artifacts ttl", &o.ArtifactsTTL, DefaultArtifactsTTL, time.Minute},
	}
	for _, d := range durations {
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < d.min {
			return o, fmt.Errorf("%w: %s must be at least %s, got %s", ErrInvalidOptions, d.name, d.min, *d.v)
		}
	}
	if o.DedupWindow > o.WorkQueueMaxAge {
		return o, fmt.Errorf("%w: dedup window %s is longer than work queue max age %s", ErrInvalidOptions, o.DedupWindow, o.WorkQueueMaxAge)
	}
	return o, nil
}

// Ensure declares every stream, KV bucket and object store of DESIGN.md
// section 4, creating what is missing and updating what differs. It is
// idempotent: every service may call it at start-up. It needs nats-server
// 2.11 or later (LK_LEASES uses per-key TTLs and limit markers).
func Ensure(ctx context.Context, js jetstream.JetStream, opts Options) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return fmt.Errorf("ensuring jetstream: %w", err)
	}
	if err := ensureStreams(ctx, js, opts); err != nil {
		return err
	}
	return ensureBuckets(ctx, js, opts)
}

// EnsureStreams declares the streams only (see Ensure).
func EnsureStreams(ctx context.Context, js jetstream.JetStream, opts Options) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return fmt.Errorf("ensuring streams: %w", err)
	}
	return ensureStreams(ctx, js, opts)
}

// EnsureBuckets declares the KV buckets and object stores only (see Ensure).
func EnsureBuckets(ctx context.Context, js jetstream.JetStream, opts Options) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return fmt.Errorf("ensuring buckets: %w", err)
	}
	return ensureBuckets(ctx, js, opts)
}

func ensureStreams(ctx context.Context, js jetstream.JetStream, o Options) error {
	for _, cfg := range streamConfigs(o) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensuring stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

func ensureBuckets(ctx context.Context, js jetstream.JetStream, o Options) error {
	for _, cfg := range keyValueConfigs(o) {
		if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			return fmt.Errorf("ensuring kv bucket %s: %w", cfg.Bucket, err)
		}
	}
	for _, cfg := range objectStoreConfigs(o) {
		if _, err := js.CreateOrUpdateObjectStore(ctx, cfg); err != nil {
			return fmt.Errorf("ensuring object store %s: %w", cfg.Bucket, err)
		}
	}
	return nil
}

func streamConfigs(o Options) []jetstream.StreamConfig {
	workQueue := func(name, subject, desc string, dedup time.Duration) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{subject},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
			MaxAge:      o.WorkQueueMaxAge,
			Duplicates:  dedup,
		}
	}
	limits := func(name, subject, desc string, maxAge time.Duration) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{subject},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
			MaxAge:      maxAge,
			Discard:     jetstream.DiscardOld,
		}
	}
	return []jetstream.StreamConfig{
		workQueue(StreamRuns, SubjectRunRequestsAll, "Run requests from NATS publishers", o.DedupWindow),
		workQueue(StreamTasks, SubjectTasksAll, "Tasks for browser runners", o.DedupWindow),
		// Results are deduplicated over a short window too: a runner that
		// retries a publish must not deliver a result twice.
		workQueue(StreamResults, SubjectResultsAll, "Task results back to the scheduler", o.DedupWindow),
		limits(StreamEvents, SubjectEventsAll, "Session, Run and Job state changes", o.EventsMaxAge),
		limits(StreamAudit, SubjectAuditAll, "Decrypts and credential accesses", o.AuditMaxAge),
	}
}

func keyValueConfigs(o Options) []jetstream.KeyValueConfig {
	kv := func(bucket, desc string) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{
			Bucket:      bucket,
			Description: desc,
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
		}
	}
	runs := kv(BucketRuns, "Run records")
	runs.TTL = o.RunRecordsMaxAge
	leases := kv(BucketLeases, "Short leases: single-flight recreate, job firing")
	leases.TTL = o.LeaseTTL
	// Limit markers let a key carry its own TTL and tell watchers when a
	// lease expired.
	leases.LimitMarkerTTL = o.LeaseTTL
	recordings := kv(BucketRecordings, "Claims of one-time recorder URLs")
	recordings.TTL = RecordingsMaxAge
	totp := kv(BucketTOTP, "Last TOTP time step used per session and secret")
	totp.TTL = TOTPMaxAge
	return []jetstream.KeyValueConfig{
		kv(BucketProjects, "Projects"),
		kv(BucketAPIKeys, "Hashed API keys"),
		kv(BucketAutomations, "Deployed automation bundles"),
		kv(BucketSessions, "AuthSession records, key <project>.<session>"),
		kv(BucketStates, "Encrypted storage states"),
		kv(BucketSecrets, "Wrapped data keys and credential ciphertexts"),
		runs,
		kv(BucketJobs, "Jobs and JobRuns"),
		leases,
		recordings,
		totp,
	}
}

func objectStoreConfigs(o Options) []jetstream.ObjectStoreConfig {
	return []jetstream.ObjectStoreConfig{
		{
			Bucket:      ObjectStates,
			Description: "Encrypted storage states too large for LK_STATES",
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
		},
		{
			Bucket:      ObjectArtifacts,
			Description: "Failure screenshots",
			TTL:         o.ArtifactsTTL,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
		},
	}
}
