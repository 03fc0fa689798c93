package keyring

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Errors about key versions. The API maps them to FailedPrecondition.
var (
	// ErrUnknownVersion is a master key version the ring does not have.
	ErrUnknownVersion = errors.New("unknown master key version")
	// ErrBelowMinimum is a version below the minimum decryption version.
	ErrBelowMinimum = errors.New("master key version below the minimum decryption version")
	// ErrRootMissing is a version derived from a root key that is not configured.
	ErrRootMissing = errors.New("root key not configured")
	// ErrRootMismatch is a configured root key that differs from the one the ring
	// recorded for its version.
	ErrRootMismatch = errors.New("root key does not match")
	// ErrInvalidMinimum is a minimum decryption version outside 1..current.
	ErrInvalidMinimum = errors.New("invalid minimum decryption version")
)

// stateFormat versions the JSON layout of State.
const stateFormat = 1

// Version is one master key version.
type Version struct {
	Version uint32    `json:"version"`
	Root    uint32    `json:"root"`
	Created time.Time `json:"created"`
}

// State is the ring every replica shares, stored as JSON under one KV key and
// changed only by compare-and-swap. It holds no key material.
type State struct {
	Format int `json:"format"`
	// ID salts the derivation of master keys (random, fixed at creation).
	ID []byte `json:"id"`
	// Current is the version that encrypts.
	Current uint32 `json:"current"`
	// Min is the minimum decryption version.
	Min      uint32    `json:"min"`
	Versions []Version `json:"versions"`
	// Roots maps a root version to its KeyCheck.
	Roots map[uint32]string `json:"roots"`
}

// Find returns version v.
func (s *State) Find(v uint32) (Version, bool) {
	i := slices.IndexFunc(s.Versions, func(x Version) bool { return x.Version == v })
	if i < 0 {
		return Version{}, false
	}
	return s.Versions[i], true
}

// Numbers lists the versions, ascending.
func (s *State) Numbers() []uint32 {
	out := make([]uint32, len(s.Versions))
	for i, v := range s.Versions {
		out[i] = v.Version
	}
	return out
}

// clone returns a deep copy, so a cached State is never changed in place.
func (s *State) clone() *State {
	c := *s
	c.ID = slices.Clone(s.ID)
	c.Versions = slices.Clone(s.Versions)
	c.Roots = make(map[uint32]string, len(s.Roots))
	for k, v := range s.Roots {
		c.Roots[k] = v
	}
	return &c
}

// validate checks the invariants every stored State keeps.
func (s *State) validate() error {
	switch {
	case s.Format != stateFormat:
		return fmt.Errorf("ring format %d, this vault reads %d", s.Format, stateFormat)
	case len(s.ID) == 0:
		return errors.New("ring has no id")
	case s.Min < 1 || s.Min > s.Current:
		return fmt.Errorf("ring minimum %d outside 1..%d", s.Min, s.Current)
	}
	if _, ok := s.Find(s.Current); !ok {
		return fmt.Errorf("ring lacks its current version %d", s.Current)
	}
	return nil
}

func decodeState(b []byte) (*State, error) {
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decoding key ring: %w", err)
	}
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("decoding key ring: %w", err)
	}
	return &s, nil
}

func encodeState(s *State) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encoding key ring: %w", err)
	}
	return b, nil
}

// withNewVersion returns s with a new current version derived from root.
func (s *State) withNewVersion(root uint32, now time.Time) *State {
	c := s.clone()
	next := c.Current
	for _, v := range c.Versions {
		next = max(next, v.Version)
	}
	next++
	c.Versions = append(c.Versions, Version{Version: next, Root: root, Created: now.UTC()})
	c.Current = next
	return c
}
