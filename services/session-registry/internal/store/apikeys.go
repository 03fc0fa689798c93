package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/errs"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// API keys look like "lk_<key id>_<secret>": the id (keyIDLen characters) finds the
// record, the SHA-256 of the whole key is compared in constant time. Only the hash is
// stored.
const (
	keyPrefix   = "lk_"
	keyIDLen    = 16
	secretBytes = 32
	// MaxKeyName is the longest API key name, in bytes.
	MaxKeyName = 100
	// shownPrefix is how many characters of a key ApiKey.prefix shows.
	shownPrefix = len(keyPrefix) + 8
)

// ErrUnknownKey answers VerifyKey for a key that is malformed, unknown or revoked.
var ErrUnknownKey = errors.New("unknown or revoked API key")

// VerifiedKey is who an API key belongs to.
type VerifiedKey struct {
	ProjectID string
	KeyID     string
}

// CreateKey creates an API key for an existing project and returns it with its
// secret, which is shown only here.
func (s *Store) CreateKey(ctx context.Context, projectID, name string) (*latchkeyv1.ApiKey, string, error) {
	if len(name) > MaxKeyName {
		return nil, "", errs.New(errs.ErrInvalid, "name is %d bytes long, at most %d are allowed", len(name), MaxKeyName)
	}
	if _, err := s.GetProject(ctx, projectID); err != nil {
		return nil, "", err
	}
	raw := make([]byte, secretBytes)
	_, _ = rand.Read(raw) // crypto/rand.Read never fails
	id := randomID(keyIDLen)
	secret := keyPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(raw)
	hash := sha256.Sum256([]byte(secret))
	key := &latchkeyv1.ApiKey{
		Id: id, ProjectId: projectID, Name: name, Prefix: secret[:shownPrefix] + "...",
		CreateTime: timestamppb.New(s.opts.Now()),
	}
	b, err := marshal(&registryv1.ApiKeyRecord{ApiKey: key, Hash: hash[:]})
	if err != nil {
		return nil, "", err
	}
	if _, err := s.keys.Create(ctx, "k."+id, b); err != nil {
		return nil, "", fmt.Errorf("storing api key: %w", err)
	}
	if _, err := s.keys.Put(ctx, "p."+projectID+"."+id, nil); err != nil {
		_ = s.keys.Purge(context.WithoutCancel(ctx), "k."+id)
		return nil, "", fmt.Errorf("indexing api key: %w", err)
	}
	return key, secret, nil
}

// VerifyKey resolves an API key to its project. A malformed, unknown or revoked key
// answers ErrUnknownKey; other errors mean the store could not tell.
func (s *Store) VerifyKey(ctx context.Context, key string) (VerifiedKey, error) {
	rest, ok := strings.CutPrefix(key, keyPrefix)
	if !ok || len(rest) < keyIDLen+2 || rest[keyIDLen] != '_' {
		return VerifiedKey{}, ErrUnknownKey
	}
	id := rest[:keyIDLen]
	if CheckID("key id", id) != nil {
		return VerifiedKey{}, ErrUnknownKey
	}
	rec := &registryv1.ApiKeyRecord{}
	if _, err := getProto(ctx, s.keys, "k."+id, rec); err != nil {
		if isNotFound(err) {
			return VerifiedKey{}, ErrUnknownKey
		}
		return VerifiedKey{}, fmt.Errorf("reading api key: %w", err)
	}
	got := sha256.Sum256([]byte(key))
	if subtle.ConstantTimeCompare(got[:], rec.GetHash()) != 1 || rec.GetApiKey().GetRevokeTime() != nil {
		return VerifiedKey{}, ErrUnknownKey
	}
	return VerifiedKey{ProjectID: rec.GetApiKey().GetProjectId(), KeyID: id}, nil
}

// ListKeys lists a project's keys, revoked ones included, by id.
func (s *Store) ListKeys(ctx context.Context, projectID string) ([]*latchkeyv1.ApiKey, error) {
	if _, err := s.GetProject(ctx, projectID); err != nil {
		return nil, err
	}
	index, err := s.listKeys(ctx, s.keys, "p."+projectID+".*")
	if err != nil {
		return nil, err
	}
	out := make([]*latchkeyv1.ApiKey, 0, len(index))
	for _, k := range index {
		id := k[strings.LastIndexByte(k, '.')+1:]
		rec := &registryv1.ApiKeyRecord{}
		if _, err := getProto(ctx, s.keys, "k."+id, rec); err != nil {
			if isNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("reading api key: %w", err)
		}
		out = append(out, rec.GetApiKey())
	}
	return out, nil
}

// RevokeKey revokes a project's key at once. Revoking a revoked key succeeds; a key of
// another project answers ErrNotFound.
func (s *Store) RevokeKey(ctx context.Context, projectID, keyID string) error {
	notFound := errs.New(errs.ErrNotFound, "API key %.40q not found in project %q", keyID, projectID)
	if CheckID("key id", keyID) != nil {
		return notFound
	}
	_, _, err := bus.UpdateProto(ctx, s.keys, "k."+keyID, notFound, func(rec *registryv1.ApiKeyRecord) error {
		switch {
		case rec.GetApiKey().GetProjectId() != projectID:
			return notFound
		case rec.GetApiKey().GetRevokeTime() != nil:
			return bus.ErrNoChange
		}
		rec.ApiKey.RevokeTime = timestamppb.New(s.opts.Now())
		return nil
	})
	if err != nil && !errors.Is(err, errs.ErrNotFound) {
		return fmt.Errorf("revoking api key: %w", err)
	}
	return err
}

// purgeKeyIndex deletes the key records of a project (its index entries go after).
func (s *Store) purgeKeyIndex(ctx context.Context, projectID string) error {
	index, err := liveKeys(ctx, s.keys, "p."+projectID+".*")
	if err != nil {
		return err
	}
	for _, k := range index {
		id := k[strings.LastIndexByte(k, '.')+1:]
		if err := s.keys.Purge(ctx, "k."+id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("purging api key: %w", err)
		}
	}
	return nil
}
