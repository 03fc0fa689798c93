package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Policy says which credentials a gRPC service accepts.
type Policy int

const (
	// PolicyNone needs no credentials (health, reflection).
	PolicyNone Policy = iota
	// PolicyPublic needs a project API key or the admin key.
	PolicyPublic
	// PolicyInternal needs the internal token: only Latchkey's services may call.
	PolicyInternal
)

// ServiceHeader names the calling service on internal calls, for audit events.
const ServiceHeader = "x-latchkey-service"

// ProjectHeader names the project an internal caller acts for when it calls a public
// API (the registry starting a create Run, for instance). It is honoured only with the
// internal token; with an API key the key's own project always applies.
const ProjectHeader = "x-latchkey-project"

// Principal is who is calling, attached to the request context.
type Principal struct {
	// ProjectID is the project of a public API key; empty for admin and internal calls.
	ProjectID string
	// KeyID identifies the API key used.
	KeyID string
	// Admin is true for the bootstrap admin key.
	Admin bool
	// Service is the calling service, for internal calls.
	Service string
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the caller attached by the auth interceptor.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// ErrUnknownKey is returned by a KeyVerifier for a key it does not know or that was revoked.
var ErrUnknownKey = errors.New("unknown or revoked API key")

// KeyVerifier resolves a project API key ("lk_...") to its principal. The registry
// implements it over its key store; other services ask the registry.
type KeyVerifier interface {
	VerifyAPIKey(ctx context.Context, key string) (Principal, error)
}

// Authenticator checks the credentials of incoming calls.
type Authenticator struct {
	internalToken [32]byte
	adminKey      [32]byte
	hasInternal   bool
	hasAdmin      bool
	keys          KeyVerifier
}

// NewAuthenticator returns an Authenticator for the internal token, the admin key and
// project keys resolved by keys (which may be nil while no key store exists). Secrets
// are kept only as SHA-256 digests.
func NewAuthenticator(internalToken, adminKey string, keys KeyVerifier) *Authenticator {
	a := &Authenticator{keys: keys}
	if internalToken != "" {
		a.internalToken, a.hasInternal = sha256.Sum256([]byte(internalToken)), true
	}
	if adminKey != "" {
		a.adminKey, a.hasAdmin = sha256.Sum256([]byte(adminKey)), true
	}
	return a
}

// SetKeyVerifier sets the project key store once it exists (the registry creates it
// after the server). Call it before Start.
func (a *Authenticator) SetKeyVerifier(k KeyVerifier) { a.keys = k }

func equalDigest(want [32]byte, got string) bool {
	d := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(want[:], d[:]) == 1
}

// authenticate returns the principal for the credentials in ctx's metadata under policy.
func (a *Authenticator) authenticate(ctx context.Context, policy Policy) (Principal, error) {
	if policy == PolicyNone {
		return Principal{}, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	token, ok := bearer(md)
	if !ok {
		return Principal{}, status.Error(codes.Unauthenticated, "missing credentials: send the header \"authorization: Bearer lk_...\" with a project API key")
	}
	switch policy {
	case PolicyInternal:
		if a.hasInternal && equalDigest(a.internalToken, token) {
			return Principal{Service: first(md.Get(ServiceHeader))}, nil
		}
		return Principal{}, status.Error(codes.PermissionDenied, "this API is internal to Latchkey: only its services may call it, API keys are refused")
	case PolicyPublic:
		if a.hasAdmin && equalDigest(a.adminKey, token) {
			return Principal{Admin: true, KeyID: "admin"}, nil
		}
		if a.hasInternal && equalDigest(a.internalToken, token) {
			// Services act for the project they name in ProjectHeader.
			return Principal{Service: first(md.Get(ServiceHeader)), ProjectID: first(md.Get(ProjectHeader))}, nil
		}
		if !strings.HasPrefix(token, "lk_") || a.keys == nil {
			return Principal{}, status.Error(codes.Unauthenticated, "invalid API key: keys start with \"lk_\"; create one with `latchkey projects keys create`")
		}
		p, err := a.keys.VerifyAPIKey(ctx, token)
		if errors.Is(err, ErrUnknownKey) {
			return Principal{}, status.Error(codes.Unauthenticated, "unknown or revoked API key")
		}
		if err != nil {
			return Principal{}, status.Error(codes.Unavailable, "could not verify the API key, try again")
		}
		return p, nil
	}
	return Principal{}, status.Error(codes.Internal, "unknown auth policy")
}

func bearer(md metadata.MD) (string, bool) {
	v := first(md.Get("authorization"))
	const prefix = "bearer "
	if len(v) <= len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
		return "", false
	}
	return strings.TrimSpace(v[len(prefix):]), true
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
