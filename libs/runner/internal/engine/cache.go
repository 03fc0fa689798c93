package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/latchkey/latchkey/libs/domain"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// bundleCache keeps parsed bundles by project, site and version. Numbered versions
// never change; the newest (version 0) is re-read after ttl.
type bundleCache struct {
	store sdk.BundleStore
	ttl   time.Duration
	mu    sync.Mutex
	m     map[bundleKey]bundleEntry
}

type bundleKey struct {
	project string
	site    string
	version int64
}

type bundleEntry struct {
	b       *recipe.Bundle
	version int64
	at      time.Time
}

func newBundleCache(store sdk.BundleStore, ttl time.Duration) *bundleCache {
	return &bundleCache{store: store, ttl: ttl, m: map[bundleKey]bundleEntry{}}
}

// get returns the parsed bundle. A bundle that does not parse is a SCRIPT_ERROR naming
// file, API, step and field.
func (c *bundleCache) get(ctx context.Context, project, site string, version int64) (*recipe.Bundle, int64, error) {
	if c.store == nil {
		return nil, 0, sdk.Fail(reasonScript, "this runner has no recipes: no handler is registered for the API")
	}
	site = domain.Site(site)
	k := bundleKey{project, site, version}
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if ok && (version != 0 || time.Since(e.at) < c.ttl) {
		return e.b, e.version, nil
	}
	files, got, err := c.store.Bundle(ctx, project, site, version)
	if err != nil {
		if sdk.IsInfra(err) {
			return nil, 0, err
		}
		return nil, 0, sdk.Fail(reasonScript, "bundle version %d: %v", version, err)
	}
	b, err := parseBundle(files)
	if err != nil {
		return nil, 0, sdk.WithCause(&sdk.Failure{Reason: reasonScript, Message: fmt.Sprintf("bundle version %d is invalid: %s", got, bundleProblems(err))}, err)
	}
	c.mu.Lock()
	c.m[k] = bundleEntry{b: b, version: got, at: time.Now()}
	c.m[bundleKey{project, site, got}] = bundleEntry{b: b, version: got, at: time.Now()}
	c.mu.Unlock()
	return b, got, nil
}

// bundleProblems lists a bundle's validation errors, each naming file, API, step and
// field.
func bundleProblems(err error) string {
	var msgs []string
	var walk func(error)
	walk = func(e error) {
		var re *recipe.Error
		if errors.As(e, &re) && e == error(re) {
			msgs = append(msgs, re.Error())
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
		}
	}
	walk(err)
	if len(msgs) == 0 {
		return err.Error()
	}
	out := msgs[0]
	for _, m := range msgs[1:] {
		out += "; " + m
	}
	return out
}

// varsCache keeps sessions' vars briefly, so a busy session is not read for every task.
type varsCache struct {
	store sdk.StateStore
	ttl   time.Duration
	mu    sync.Mutex
	m     map[string]varsEntry
}

type varsEntry struct {
	vars map[string]string
	at   time.Time
}

func newVarsCache(store sdk.StateStore, ttl time.Duration) *varsCache {
	return &varsCache{store: store, ttl: ttl, m: map[string]varsEntry{}}
}

func (c *varsCache) get(ctx context.Context, project, session string) (map[string]string, error) {
	if c.store == nil || session == "" {
		return nil, nil
	}
	k := project + "/" + session
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if ok && time.Since(e.at) < c.ttl {
		return e.vars, nil
	}
	vars, err := c.store.SessionVars(ctx, project, session)
	if err != nil {
		return nil, err
	}
	vars = maps.Clone(vars)
	c.mu.Lock()
	c.m[k] = varsEntry{vars: vars, at: time.Now()}
	c.mu.Unlock()
	return vars, nil
}

// parseBundle is recipe.Parse for a project's bundle.
func parseBundle(files []recipe.File) (*recipe.Bundle, error) {
	return recipe.Parse(files, recipe.Options{})
}
