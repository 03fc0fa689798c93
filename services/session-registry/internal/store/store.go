// Package store keeps the registry's records in NATS JetStream: projects, hashed API
// keys, versioned bundles, AuthSessions with their state machine, and encrypted
// storage states (ciphertext only, cached through libs/cache). Every update is a
// compare-and-swap on the KV revision; every session transition is published as a
// latchkey.events.v1.SessionEvent.
//
// Layout:
//
//	LK_PROJECTS    <project>                      ProjectRecord
//	LK_APIKEYS     k.<key id>                     ApiKeyRecord
//	               p.<project>.<key id>           (empty: the project's key index)
//	LK_AUTOMATIONS <project>.head                 BundleHead
//	               <project>.<version>            latchkey.v1.Bundle with its files
//	LK_SESSIONS    <project>.<session>            SessionRecord
//	LK_STATES      <project>.<session>.<blob>     ciphertext (inline)
//	LK_STATES_OBJ  <project>.<session>.<blob>     ciphertext (large)
package store

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/cache"
	"github.com/latchkey/latchkey/libs/errs"
)

// Defaults of Options.
const (
	DefaultStateCacheTTL  = 5 * time.Minute
	DefaultInlineMaxBytes = 256 << 10
	DefaultKeepRevisions  = 3
)

// Options tune a Store. Zero values take the defaults.
type Options struct {
	// StateCacheTTL is how long a state's ciphertext stays in the cache.
	StateCacheTTL time.Duration
	// InlineMaxBytes is the largest ciphertext kept in LK_STATES; larger ones go to
	// the object store LK_STATES_OBJ.
	InlineMaxBytes int
	// KeepRevisions is how many newest state revisions are kept, besides the last
	// known-good one.
	KeepRevisions int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Store is the registry's persistence. Safe for concurrent use.
type Store struct {
	opts     Options
	log      *slog.Logger
	tracer   trace.Tracer
	js       jetstream.JetStream
	cache    cache.Cache
	projects jetstream.KeyValue
	keys     jetstream.KeyValue
	bundles  jetstream.KeyValue
	sessions jetstream.KeyValue
	states   jetstream.KeyValue
	objects  jetstream.ObjectStore
	// streams are the KV buckets' streams by bucket name, for listing keys.
	streams map[string]jetstream.Stream
}

// Open binds a Store to the registry's buckets, which bus.Ensure declared.
func Open(ctx context.Context, js jetstream.JetStream, c cache.Cache, log *slog.Logger, tp trace.TracerProvider, opts Options) (*Store, error) {
	if opts.StateCacheTTL <= 0 {
		opts.StateCacheTTL = DefaultStateCacheTTL
	}
	if opts.InlineMaxBytes <= 0 {
		opts.InlineMaxBytes = DefaultInlineMaxBytes
	}
	if opts.KeepRevisions <= 0 {
		opts.KeepRevisions = DefaultKeepRevisions
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Store{opts: opts, log: log, tracer: tp.Tracer("github.com/latchkey/latchkey/services/session-registry"), js: js, cache: c, streams: map[string]jetstream.Stream{}}
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{
		{bus.BucketProjects, &s.projects}, {bus.BucketAPIKeys, &s.keys}, {bus.BucketAutomations, &s.bundles},
		{bus.BucketSessions, &s.sessions}, {bus.BucketStates, &s.states},
	} {
		kv, err := js.KeyValue(ctx, b.name)
		if err != nil {
			return nil, fmt.Errorf("opening kv bucket %s: %w", b.name, err)
		}
		*b.kv = kv
		str, err := js.Stream(ctx, "KV_"+b.name)
		if err != nil {
			return nil, fmt.Errorf("opening the stream of kv bucket %s: %w", b.name, err)
		}
		s.streams[b.name] = str
	}
	obj, err := js.ObjectStore(ctx, bus.ObjectStates)
	if err != nil {
		return nil, fmt.Errorf("opening object store %s: %w", bus.ObjectStates, err)
	}
	s.objects = obj
	return s, nil
}

var idRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// CheckID checks a project or session id: lowercase letters, digits and dashes, 1-63
// characters, starting and ending with a letter or digit.
func CheckID(what, id string) error {
	if !idRE.MatchString(id) {
		return errs.New(errs.ErrInvalid, "%s %.80q is not valid: use 1-63 lowercase letters, digits and dashes, starting and ending with a letter or digit", what, id)
	}
	return nil
}

// randomID returns n characters from [a-z0-9], uniformly.
func randomID(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	for i := range b {
		b[i] = alphabet[int(b[i])%32]
	}
	return string(b)
}

// NewSessionID returns a random session id.
func NewSessionID() string { return "s-" + randomID(14) }

// getProto reads key from kv into m and returns the entry's revision. A missing key
// answers jetstream.ErrKeyNotFound.
func getProto(ctx context.Context, kv jetstream.KeyValue, key string, m proto.Message) (uint64, error) {
	e, err := kv.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if err := proto.Unmarshal(e.Value(), m); err != nil {
		return 0, fmt.Errorf("decoding %s %s: %w", kv.Bucket(), key, err)
	}
	return e.Revision(), nil
}

func marshal(m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding %T: %w", m, err)
	}
	return b, nil
}

func isNotFound(err error) bool { return errors.Is(err, jetstream.ErrKeyNotFound) }

// liveKeys returns the sorted keys of kv matching filter that are not deleted, by
// receiving every entry's metadata: exact, but slow for large buckets.
func liveKeys(ctx context.Context, kv jetstream.KeyValue, filter string) ([]string, error) {
	var keys []string
	err := bus.Scan(ctx, kv, filter, true, func(e jetstream.KeyValueEntry) error {
		keys = append(keys, e.Key())
		return nil
	})
	slices.Sort(keys)
	return slices.Compact(keys), err
}

// listKeys returns the sorted keys of kv matching filter. It asks the bucket's stream
// for its subjects (one request, paged by the server) rather than receiving every
// entry. Keys deleted or purged may still be listed (their markers remain): callers
// skip keys whose Get answers not found.
func (s *Store) listKeys(ctx context.Context, kv jetstream.KeyValue, filter string) ([]string, error) {
	prefix := "$KV." + kv.Bucket() + "."
	info, err := s.streams[kv.Bucket()].Info(ctx, jetstream.WithSubjectFilter(prefix+filter))
	if err != nil {
		return nil, fmt.Errorf("listing %s keys %s: %w", kv.Bucket(), filter, err)
	}
	keys := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		keys = append(keys, strings.TrimPrefix(subj, prefix))
	}
	slices.Sort(keys)
	return keys, nil
}
