package engine

import (
	"go.opentelemetry.io/otel/codes"

	"github.com/latchkey/latchkey/libs/domain"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/runner/internal/chrome"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// acquire takes the session's warm tab, or a new tab in the session's jar when its
// tabs are all busy, or opens a new jar: always for a create (which logs in from
// nothing), for fresh_context tasks and for sessionless APIs.
func (e *execution) acquire() error {
	t := e.task
	session := ""
	if id := t.GetSession().GetAuthSessionId(); id != "" {
		session = t.GetProjectId() + "/" + id
	}
	pin := chrome.Pin{Proxy: proxyOf(t.GetSession().GetProxy()), UserAgent: t.GetSession().GetBrowser().GetUserAgent(), Locale: t.GetSession().GetBrowser().GetLocale()}
	fresh := session == "" || t.GetFreshContext() || t.GetKind() == runnerv1.TaskKind_TASK_KIND_CREATE
	if !fresh {
		if bc, ok := e.r.warmSet.Take(session, pin.String()); ok {
			e.r.pool.Lend(bc)
			e.bc, e.warm = bc, true
			e.res.WarmContext = true
			return nil
		}
		if jar := e.r.jarOf(session); jar != nil {
			ctx, span := e.r.tracer.Start(e.base, "open tab")
			bc, ok, err := e.r.pool.SiblingTab(ctx, jar, pin)
			span.End()
			if err != nil {
				return err
			}
			if ok {
				e.bc, e.warm = bc, true
				e.res.WarmContext = true
				bc.TakeVisited()
				return nil
			}
		}
	}
	if proxy := pin.Proxy; proxy != nil && proxy.Username != "" && e.r.deps.Vault != nil {
		fields, err := e.r.deps.Vault.Secret(e.base, t.GetProjectId(), domain.ProxySecret(t.GetSession().GetAuthSessionId()), t.GetRunId())
		if err != nil {
			return err
		}
		proxy.Password = fields["password"]
	}
	ctx, span := e.r.tracer.Start(e.base, "open browser context")
	defer span.End()
	bc, err := e.r.pool.NewContext(ctx, session, pin)
	if err != nil {
		span.SetStatus(codes.Error, "open failed")
		if c := sdk.CauseOf(e.base); c != nil && e.base.Err() != nil {
			return c
		}
		return err
	}
	e.bc = bc
	bc.TakeVisited()
	if session != "" {
		e.r.setJar(session, bc.Jar)
	}
	return nil
}

// jarOf returns the session's newest jar on this runner while it is open.
func (r *Runner) jarOf(session string) *chrome.Jar {
	r.mu.Lock()
	defer r.mu.Unlock()
	jar := r.jars[session]
	if jar != nil && !jar.Open(r.pool) {
		delete(r.jars, session)
		return nil
	}
	return jar
}

// pruneJars forgets the sessions' jars that closed.
func (r *Runner) pruneJars() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for s, jar := range r.jars {
		if !jar.Open(r.pool) {
			delete(r.jars, s)
		}
	}
}

// setJar makes jar the one the session's next tabs open in. The idle tabs of the jar
// it replaces close (a login's context, once its state was verified in a fresh one):
// two jars of one session would each restore the revisions the other writes back.
func (r *Runner) setJar(session string, jar *chrome.Jar) {
	r.mu.Lock()
	old := r.jars[session]
	r.jars[session] = jar
	r.mu.Unlock()
	if old != nil && old != jar {
		r.warmSet.Drop(func(bc *chrome.Context) bool { return bc.Jar == old })
	}
}

// currentJar reports whether jar is the one the session's tabs open in.
func (r *Runner) currentJar(session string, jar *chrome.Jar) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.jars[session] == jar
}

func proxyOf(p *latchkeyv1.Proxy) *chrome.Proxy {
	if p.GetServer() == "" {
		return nil
	}
	return &chrome.Proxy{Server: p.GetServer(), Username: p.GetUsername(), Password: p.GetPassword()}
}
