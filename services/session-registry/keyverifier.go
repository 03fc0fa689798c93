package registry

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/errs"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/services/session-registry/internal/store"
)

// KeyVerifier returns the verifier of project API keys backed by the registry's own
// key store, for a process that runs the registry (set it with
// server.Authenticator.SetKeyVerifier). A revoked key fails at once.
func (s *Service) KeyVerifier() server.KeyVerifier { return localVerifier{s} }

type localVerifier struct{ s *Service }

func (v localVerifier) VerifyAPIKey(ctx context.Context, key string) (server.Principal, error) {
	st := v.s.api.Store()
	if st == nil {
		return server.Principal{}, errors.New("verifying api key: the registry has not started")
	}
	k, err := st.VerifyKey(ctx, key)
	if errors.Is(err, store.ErrUnknownKey) {
		return server.Principal{}, server.ErrUnknownKey
	}
	if err != nil {
		return server.Principal{}, err
	}
	return server.Principal{ProjectID: k.ProjectID, KeyID: k.KeyID}, nil
}

// Defaults of RemoteVerifierOptions.
const (
	DefaultPositiveTTL = 30 * time.Second
	DefaultNegativeTTL = 5 * time.Second
	DefaultMaxEntries  = 10_000
)

// RemoteVerifierOptions tune NewRemoteKeyVerifier. Zero values take the defaults.
type RemoteVerifierOptions struct {
	// PositiveTTL is how long a valid key is trusted without asking again: a revoked
	// key keeps working this long in processes without the registry unless the
	// revocation watch (Keys) sees the change first.
	PositiveTTL time.Duration
	// NegativeTTL is how long an unknown key is refused without asking again.
	NegativeTTL time.Duration
	// MaxEntries bounds the cache; when full it is emptied.
	MaxEntries int
	// Keys, when set, is the registry's LK_APIKEYS bucket: the verifier watches it and
	// forgets a key the moment it is revoked or deleted, so revocation does not wait
	// for PositiveTTL (see WatchRevocations).
	Keys jetstream.KeyValue
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// NewRemoteKeyVerifier returns a verifier for processes without the registry (serve
// scheduler): it asks SessionStateService.AuthenticateApiKey and caches the answers
// in process, keyed by the key's SHA-256, never the key.
func NewRemoteKeyVerifier(c registryv1.SessionStateServiceClient, o RemoteVerifierOptions) *RemoteKeyVerifier {
	if o.PositiveTTL <= 0 {
		o.PositiveTTL = DefaultPositiveTTL
	}
	if o.NegativeTTL <= 0 {
		o.NegativeTTL = DefaultNegativeTTL
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &RemoteKeyVerifier{c: c, o: o, cache: map[[32]byte]verdict{}}
}

type verdict struct {
	p       server.Principal
	unknown bool
	until   time.Time
}

// RemoteKeyVerifier verifies API keys by asking the registry, with a cache.
type RemoteKeyVerifier struct {
	c registryv1.SessionStateServiceClient
	o RemoteVerifierOptions

	mu    sync.Mutex
	cache map[[32]byte]verdict
}

// VerifyAPIKey answers from the cache, or asks the registry.
func (v *RemoteKeyVerifier) VerifyAPIKey(ctx context.Context, key string) (server.Principal, error) {
	h := sha256.Sum256([]byte(key))
	now := v.o.Now()
	v.mu.Lock()
	got, ok := v.cache[h]
	v.mu.Unlock()
	if ok && now.Before(got.until) {
		return got.answer()
	}
	resp, err := v.c.AuthenticateApiKey(ctx, &registryv1.AuthenticateApiKeyRequest{ApiKey: key})
	switch {
	case errors.Is(errs.FromStatus(err), errs.ErrUnauthenticated):
		got = verdict{unknown: true, until: now.Add(v.o.NegativeTTL)}
	case err != nil:
		return server.Principal{}, err
	default:
		got = verdict{p: server.Principal{ProjectID: resp.GetProjectId(), KeyID: resp.GetApiKeyId(), Admin: resp.GetAdmin()}, until: now.Add(v.o.PositiveTTL)}
	}
	v.mu.Lock()
	if len(v.cache) >= v.o.MaxEntries {
		clear(v.cache)
	}
	v.cache[h] = got
	v.mu.Unlock()
	return got.answer()
}

func (v verdict) answer() (server.Principal, error) {
	if v.unknown {
		return server.Principal{}, server.ErrUnknownKey
	}
	return v.p, nil
}

// WatchRevocations watches LK_APIKEYS (RemoteVerifierOptions.Keys) until ctx ends and
// drops the cached verdict of every key that is revoked or deleted, as soon as the
// change reaches this process: the next call with that key asks the registry, which
// refuses it. A change missed while the watch is down waits at most PositiveTTL.
func (v *RemoteKeyVerifier) WatchRevocations(ctx context.Context) error {
	if v.o.Keys == nil {
		return nil
	}
	w, err := v.o.Keys.Watch(ctx, "k.*", jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("watching api key revocations: %w", err)
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil && revoked(e) {
					v.forget(strings.TrimPrefix(e.Key(), "k."))
				}
			}
		}
	}()
	return nil
}

// revoked reports whether a change of a key record ends the key.
func revoked(e jetstream.KeyValueEntry) bool {
	if e.Operation() != jetstream.KeyValuePut {
		return true // deleted or purged, with its project
	}
	rec := &registryv1.ApiKeyRecord{}
	return proto.Unmarshal(e.Value(), rec) != nil || rec.GetApiKey().GetRevokeTime() != nil
}

// forget drops the cached verdicts of one key.
func (v *RemoteKeyVerifier) forget(keyID string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for h, got := range v.cache {
		if got.p.KeyID == keyID {
			delete(v.cache, h)
		}
	}
}
