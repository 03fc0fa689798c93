// Package api implements the registry's gRPC services over the store: the public
// ProjectService, AutomationService and AuthSessionService, and the internal
// SessionStateService. Every public RPC is scoped to the caller's project; another
// project's ids answer NotFound. Errors are mapped to gRPC status in one place
// (errs.Status).
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/latchkey/latchkey/libs/errs"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/services/session-registry/internal/store"
)

// Deps are what the APIs need.
type Deps struct {
	Log   *slog.Logger
	Vault vaultv1.VaultServiceClient
	Runs  latchkeyv1.RunServiceClient
	// AdminKey lets AuthenticateApiKey recognise the admin key; empty: none.
	AdminKey string
	// Recorder mints recorder URLs (internal/recorder).
	Recorder RecorderURLs
}

// RecorderURLs mints the one-time URLs of the hosted recorder.
type RecorderURLs interface {
	// TTL is how long a URL lives.
	TTL() time.Duration
	// URL returns the URL that records run's browser for the session until expire.
	URL(project, session, run string, expire time.Time) (string, error)
}

// API holds the registry's gRPC services. Its store is set by SetStore once the
// registry has started; calls before that answer Unavailable.
type API struct {
	d        Deps
	st       atomic.Pointer[store.Store]
	adminKey [32]byte
	hasAdmin bool
}

// New returns the API.
func New(d Deps) *API {
	a := &API{d: d}
	if d.AdminKey != "" {
		a.adminKey, a.hasAdmin = sha256.Sum256([]byte(d.AdminKey)), true
	}
	return a
}

// SetStore makes the APIs serve from s.
func (a *API) SetStore(s *store.Store) { a.st.Store(s) }

// Store returns the store, or nil before SetStore.
func (a *API) Store() *store.Store { return a.st.Load() }

func (a *API) store() (*store.Store, error) {
	if s := a.st.Load(); s != nil {
		return s, nil
	}
	return nil, errs.New(errs.ErrUnavailable, "the session registry is starting; try again in a moment")
}

// fail maps err to the gRPC status the client gets, logging unknown errors in full.
func (a *API) fail(ctx context.Context, err error) error {
	method, _ := grpc.Method(ctx)
	return errs.Status(ctx, a.d.Log, "session registry", method, err)
}

func (a *API) isAdminKey(key string) bool {
	d := sha256.Sum256([]byte(key))
	return a.hasAdmin && subtle.ConstantTimeCompare(a.adminKey[:], d[:]) == 1
}

// callerProject returns the project a public RPC acts on: the project of the caller's
// API key, or the one an internal caller names. The admin key has no project.
func callerProject(ctx context.Context) (string, error) {
	p, ok := server.PrincipalFrom(ctx)
	switch {
	case !ok:
		return "", errs.New(errs.ErrDenied, "no caller: send a project API key")
	case p.ProjectID != "":
		return p.ProjectID, nil
	case p.Admin:
		return "", errs.New(errs.ErrDenied, "the admin key manages projects only: call this with a project API key (`latchkey projects keys create`)")
	default:
		return "", errs.New(errs.ErrInvalid, "an internal caller must name the project in the %s header", server.ProjectHeader)
	}
}

// namedProject resolves the project_id of a ProjectService request: the admin key and
// internal callers may name any project; a project key only its own (empty means
// its own), and any other id answers NotFound as if it did not exist.
func namedProject(ctx context.Context, requested string) (string, error) {
	p, ok := server.PrincipalFrom(ctx)
	switch {
	case !ok:
		return "", errs.New(errs.ErrDenied, "no caller: send a project API key")
	case p.Admin || (p.Service != "" && p.ProjectID == ""):
		if requested == "" {
			return "", errs.New(errs.ErrInvalid, "project_id is required with the admin key")
		}
		return requested, store.CheckID("project id", requested)
	case requested == "" || requested == p.ProjectID:
		return p.ProjectID, nil
	}
	if err := store.CheckID("project id", requested); err != nil {
		return "", err
	}
	return "", errs.New(errs.ErrNotFound, "project %q not found", requested)
}

// requireAdmin refuses everyone but the admin key.
func requireAdmin(ctx context.Context) error {
	if p, ok := server.PrincipalFrom(ctx); ok && p.Admin {
		return nil
	}
	return errs.New(errs.ErrDenied, "only the admin key may create, list or delete projects")
}

// peer turns a failed call to the vault or the scheduler into an error for the user:
// kinds a user can act on keep the peer's message, an unreachable peer is
// Unavailable, anything else is internal (logged, generic to the client). The peer's
// answer is read by its errs kind (errs.FromStatus), whether or not the connection
// converted it already.
func (a *API) peer(ctx context.Context, what string, err error) error {
	err = errs.FromStatus(err)
	for _, kind := range []error{errs.ErrInvalid, errs.ErrPrecondition, errs.ErrTooLarge, errs.ErrNotFound} {
		if errors.Is(err, kind) {
			return errs.New(kind, "%s: %s", what, status.Convert(err).Message()).WithCause(err)
		}
	}
	for _, kind := range []error{errs.ErrUnavailable, errs.ErrUnimplemented, context.DeadlineExceeded, context.Canceled} {
		if !errors.Is(err, kind) {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.d.Log.WarnContext(ctx, "peer service failed", "peer", what, "error", err)
		return errs.New(errs.ErrUnavailable, "%s is not available right now; try again", what)
	}
	return fmt.Errorf("calling %s: %w", what, err)
}

// handle runs one RPC: it gets the store, calls fn, and maps its error to a status.
func handle[Req, Resp any](ctx context.Context, a *API, req Req, fn func(context.Context, *store.Store, Req) (*Resp, error)) (*Resp, error) {
	st, err := a.store()
	if err == nil {
		var resp *Resp
		if resp, err = fn(ctx, st, req); err == nil {
			return resp, nil
		}
	}
	return nil, a.fail(ctx, err)
}

func errorsIsNotFound(err error) bool { return errors.Is(err, errs.ErrNotFound) }
