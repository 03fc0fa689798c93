package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
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

// ErrTooManyReplicas is returned by Ensure when the NATS servers cannot hold
// Options.Replicas copies: a single server holds 1, a cluster no more than its
// servers with JetStream.
var ErrTooManyReplicas = errors.New("more replicas than the NATS servers can hold")

// Options tunes the streams and buckets Ensure declares. Zero values take
// the defaults above.
type Options struct {
	// Replicas of every stream and bucket: 1 on one server, 3 on a cluster.
	// Ensure raises the replicas of existing streams and buckets to it, and
	// never lowers them: a stream with more keeps them (lower them by hand,
	// with `nats stream edit`, if that is really meant).
	Replicas int
	// ReadyTimeout bounds how long Ensure waits for a JetStream that is not ready yet
	// (a cluster electing its leader) before it gives up. Default 60 s.
	ReadyTimeout time.Duration
	// Logger hears of streams and buckets that keep more replicas than asked
	// for; nil discards it.
	Logger *slog.Logger
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
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
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
// MinServerVersion or later (LK_LEASES uses per-key TTLs and limit markers).
// With more Options.Replicas than the servers can hold it fails with
// ErrTooManyReplicas at the first stream the servers refuse.
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
	until := time.Now().Add(o.ReadyTimeout)
	for _, cfg := range shuffled(streamConfigs(o)) {
		err := declare(ctx, o, until, "stream "+cfg.Name, func(ctx context.Context) error {
			r, err := replicasFor(ctx, js, cfg.Name, o)
			if err != nil {
				return err
			}
			cfg.Replicas = r
			_, err = js.CreateOrUpdateStream(ctx, cfg)
			return err
		})
		if err != nil {
			return fmt.Errorf("ensuring stream %s: %w", cfg.Name, replicasError(js, o, err))
		}
	}
	return nil
}

func ensureBuckets(ctx context.Context, js jetstream.JetStream, o Options) error {
	until := time.Now().Add(o.ReadyTimeout)
	for _, cfg := range shuffled(keyValueConfigs(o)) {
		err := declare(ctx, o, until, "kv bucket "+cfg.Bucket, func(ctx context.Context) error {
			r, err := replicasFor(ctx, js, kvStreamPrefix+cfg.Bucket, o)
			if err != nil {
				return err
			}
			cfg.Replicas = r
			return ensureBucket(ctx, js, cfg)
		})
		if err != nil {
			return fmt.Errorf("ensuring kv bucket %s: %w", cfg.Bucket, replicasError(js, o, err))
		}
	}
	for _, cfg := range objectStoreConfigs(o) {
		err := declare(ctx, o, until, "object store "+cfg.Bucket, func(ctx context.Context) error {
			r, err := replicasFor(ctx, js, objectStreamPrefix+cfg.Bucket, o)
			if err != nil {
				return err
			}
			cfg.Replicas = r
			_, err = js.CreateOrUpdateObjectStore(ctx, cfg)
			return err
		})
		if err != nil {
			return fmt.Errorf("ensuring object store %s: %w", cfg.Bucket, replicasError(js, o, err))
		}
	}
	return nil
}

// shuffled returns list in a random order: services starting together then mostly
// declare different streams at any moment, rather than race for each in turn (see
// declareAttemptTimeout). A rotation would not do: two services that met once would
// go on in lockstep.
func shuffled[T any](list []T) []T {
	rand.Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
	return list
}

// declareAttemptTimeout bounds one try of a declaration. Two services creating the
// same replicated stream at once (every service declares everything at start-up) can
// both go unanswered although the stream is created — seen with nats-server 2.15.2 —
// so a try that hangs is cut short and the next one finds the stream.
const declareAttemptTimeout = 2 * time.Second

// declare runs one declaration, trying again while JetStream is not ready — a cluster
// still electing its meta leader or waiting for its peers answers with timeouts,
// "temporarily unavailable" or "no suitable peers" — until until or ctx ends. A
// service started beside its NATS cluster (a deployment's first minute, a rolling
// restart) waits for it instead of exiting.
func declare(ctx context.Context, o Options, until time.Time, what string, fn func(context.Context) error) error {
	wait := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, declareAttemptTimeout)
		err := fn(actx)
		cancel()
		if err == nil || !notReady(ctx, err) || time.Now().Add(wait).After(until) {
			return err
		}
		o.Logger.WarnContext(ctx, "JetStream is not ready yet, declaring again", "what", what, "retry_in", wait, "error", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// notReady tells a JetStream that is not ready yet, or a declaration that raced
// another service's, from a refusal that stays.
func notReady(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errCodeClusterNoPeers, errCodeInsufficientResources:
			return true // peers that have not joined yet
		case jetstream.JSErrCodeStreamNotFound:
			// Another service created it a moment ago (our create answered "exists")
			// and the server we asked does not know it yet: the next attempt finds it.
			// Every declaration creates what is missing, so this never lasts.
			return true
		}
	}
	return Transient(err) || errors.Is(err, context.DeadlineExceeded)
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

// ensureBucket creates a KV bucket, or brings an existing one's stream to cfg's
// replicas, age limit and limit markers. A replicated bucket reads from its leader:
// nats.go makes buckets with direct gets, which any replica answers, so on a cluster
// a read right after a write can miss it (a project created, then "not found" when
// read back — seen in the chaos suite). Latchkey reads its records to decide, so they
// must read their writes; one leader round trip is the price. An existing bucket is
// updated through its stream, not CreateOrUpdateKeyValue, which would turn direct
// gets back on at every start.
func ensureBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) error {
	name := kvStreamPrefix + cfg.Bucket
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateKeyValue(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return err
		}
		if s, err = js.Stream(ctx, name); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	sc := s.CachedInfo().Config
	want := sc
	want.Description, want.Replicas, want.MaxAge = cfg.Description, cfg.Replicas, cfg.TTL
	want.AllowDirect = cfg.Replicas < 2
	if cfg.LimitMarkerTTL > 0 {
		want.AllowMsgTTL, want.SubjectDeleteMarkerTTL = true, cfg.LimitMarkerTTL
	}
	if reflect.DeepEqual(sc, want) {
		return nil
	}
	_, err = js.UpdateStream(ctx, want)
	return err
}
