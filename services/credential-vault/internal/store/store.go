// Package store keeps the vault's records in the LK_SECRETS KV bucket: each project's
// key material (`project.<project>`) and each sealed secret (`secret.<project>.<id>`).
// The ring state lives there too, under keyring.RingKey. Every update is a
// compare-and-swap on the KV revision; values are ciphertexts or random material,
// never plaintext.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Errors; the API maps each to a gRPC status.
var (
	// ErrNotFound is a secret that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists is a secret created with "must not exist" that exists.
	ErrExists = errors.New("already exists: pass overwrite, or its expected_revision, to replace it")
	// ErrRevisionMismatch is a compare-and-swap against a revision that is not current.
	ErrRevisionMismatch = errors.New("the expected revision is not the current one: read it again and retry")
	// ErrNoMaterial is a project with no key material: shredded, or never used.
	ErrNoMaterial = errors.New("no keys in the vault: the project was deleted, or never stored anything, so what was sealed for it can no longer be decrypted")
)

// materialSize is the size of a project's random key material.
const materialSize = 32

const (
	secretPrefix   = "secret."
	materialPrefix = "project."
)

// Store reads and writes LK_SECRETS.
type Store struct {
	kv     jetstream.KeyValue
	random io.Reader
	now    func() time.Time
}

// New returns a Store over kv; random makes project material.
func New(kv jetstream.KeyValue, random io.Reader, now func() time.Time) *Store {
	return &Store{kv: kv, random: random, now: now}
}

// material is the stored record of a project's key material.
type material struct {
	Salt    []byte    `json:"salt"`
	Created time.Time `json:"created"`
}

// Material returns a project's key material, or ErrNoMaterial.
func (s *Store) Material(ctx context.Context, project string) ([]byte, error) {
	e, err := s.kv.Get(ctx, materialPrefix+project)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("project %q: %w", project, ErrNoMaterial)
	}
	if err != nil {
		return nil, fmt.Errorf("reading key material of project %s: %w", project, err)
	}
	var m material
	if err := json.Unmarshal(e.Value(), &m); err != nil || len(m.Salt) != materialSize {
		return nil, fmt.Errorf("reading key material of project %s: corrupt record", project)
	}
	return m.Salt, nil
}

// EnsureMaterial returns a project's key material, creating it on first use.
func (s *Store) EnsureMaterial(ctx context.Context, project string) ([]byte, error) {
	for range 3 {
		salt, err := s.Material(ctx, project)
		if !errors.Is(err, ErrNoMaterial) {
			return salt, err
		}
		salt = make([]byte, materialSize)
		if _, err := io.ReadFull(s.random, salt); err != nil {
			return nil, fmt.Errorf("generating key material: %w", err)
		}
		b, err := json.Marshal(material{Salt: salt, Created: s.now().UTC()})
		if err != nil {
			return nil, fmt.Errorf("encoding key material: %w", err)
		}
		_, err = s.kv.Create(ctx, materialPrefix+project, b)
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue // another request created it first: use theirs
		}
		if err != nil {
			return nil, fmt.Errorf("storing key material of project %s: %w", project, err)
		}
		return salt, nil
	}
	return nil, fmt.Errorf("creating key material of project %s: too many concurrent writers", project)
}

// Shred destroys a project's key material, then deletes its secrets. It is
// idempotent; if it fails half-way the project's ciphertexts are already
// undecryptable and a retry deletes what is left.
func (s *Store) Shred(ctx context.Context, project string) (int, error) {
	deleted := 0
	// A request that raced the purge may have created new material and written a
	// secret with it; go round until both are gone.
	for range 3 {
		if err := s.kv.Purge(ctx, materialPrefix+project); err != nil {
			return deleted, fmt.Errorf("purging key material of project %s: %w", project, err)
		}
		n, err := s.deleteSecrets(ctx, project)
		deleted += n
		if err != nil {
			return deleted, err
		}
		if _, err := s.Material(ctx, project); errors.Is(err, ErrNoMaterial) {
			return deleted, nil
		}
	}
	return deleted, fmt.Errorf("shredding project %s: it is still being written to; stop its traffic and retry", project)
}

func (s *Store) deleteSecrets(ctx context.Context, project string) (int, error) {
	n := 0
	err := s.Scan(ctx, secretPrefix+project+".>", func(e Entry) error {
		if err := s.kv.Purge(ctx, e.key); err != nil {
			return fmt.Errorf("deleting secret %s of project %s: %w", e.ID, project, err)
		}
		n++
		return nil
	})
	return n, err
}

// Secret is a stored sealed secret.
type Secret struct {
	Ciphertext []byte
	Revision   uint64
}

// Get returns a secret, or ErrNotFound.
func (s *Store) Get(ctx context.Context, project, id string) (Secret, error) {
	e, err := s.kv.Get(ctx, secretKey(project, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Secret{}, fmt.Errorf("secret %q in project %q: %w", id, project, ErrNotFound)
	}
	if err != nil {
		return Secret{}, fmt.Errorf("reading secret %s: %w", id, err)
	}
	return Secret{Ciphertext: e.Value(), Revision: e.Revision()}, nil
}

// Mode says how Put treats an existing secret.
type Mode int

const (
	// Create fails with ErrExists if the secret exists.
	Create Mode = iota
	// Replace replaces whatever is there.
	Replace
	// Update replaces the secret only at the given revision.
	Update
)

// Put stores ct as a secret by mode and returns the new revision.
func (s *Store) Put(ctx context.Context, project, id string, ct []byte, mode Mode, revision uint64) (uint64, error) {
	key := secretKey(project, id)
	var rev uint64
	var err error
	switch mode {
	case Create:
		rev, err = s.kv.Create(ctx, key, ct)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("secret %q in project %q %w", id, project, ErrExists)
		}
	case Replace:
		rev, err = s.kv.Put(ctx, key, ct)
	default:
		rev, err = s.kv.Update(ctx, key, ct, revision)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("secret %q in project %q: %w", id, project, ErrRevisionMismatch)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("storing secret %s: %w", id, err)
	}
	return rev, nil
}

// Delete deletes a secret; a missing one is not an error.
func (s *Store) Delete(ctx context.Context, project, id string) error {
	if err := s.kv.Purge(ctx, secretKey(project, id)); err != nil {
		return fmt.Errorf("deleting secret %s: %w", id, err)
	}
	return nil
}

// Entry is one secret seen by Scan.
type Entry struct {
	Project, ID string
	Secret
	key string
}

// Scan calls fn for each stored secret matching filter (a KV key filter under
// "secret."), in one pass over the bucket, stopping at fn's first error.
func (s *Store) Scan(ctx context.Context, filter string, fn func(Entry) error) error {
	w, err := s.kv.WatchFiltered(ctx, []string{filter}, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("listing secrets: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok || e == nil {
				return nil
			}
			project, id, ok := parseSecretKey(e.Key())
			if !ok {
				continue
			}
			if err := fn(Entry{Project: project, ID: id, Secret: Secret{Ciphertext: e.Value(), Revision: e.Revision()}, key: e.Key()}); err != nil {
				return err
			}
		case <-ctx.Done():
			return fmt.Errorf("listing secrets: %w", ctx.Err())
		}
	}
}

// AllSecrets is the Scan filter for every secret.
const AllSecrets = secretPrefix + ">"

// ReplaceEntry stores ct in place of a scanned entry if it has not changed since.
func (s *Store) ReplaceEntry(ctx context.Context, e Entry, ct []byte) error {
	_, err := s.Put(ctx, e.Project, e.ID, ct, Update, e.Revision)
	return err
}

func secretKey(project, id string) string { return secretPrefix + project + "." + id }

func parseSecretKey(key string) (project, id string, ok bool) {
	rest, ok := strings.CutPrefix(key, secretPrefix)
	if !ok {
		return "", "", false
	}
	project, id, ok = strings.Cut(rest, ".")
	return project, id, ok && project != "" && id != ""
}
