package api

import (
	"context"
	"slices"

	"github.com/latchkey/latchkey/libs/errs"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/services/session-registry/internal/store"
)

// updatable are the paths UpdateAuthSession accepts.
var updatable = []string{"display_name", "labels", "proxy", "refresh", "recorder", "vars", "browser"}

// UpdateAuthSession changes the fields named in update_mask. With auth_session.etag
// set, the update happens only if it is still current (else Aborted).
func (a AuthSessions) UpdateAuthSession(ctx context.Context, req *latchkeyv1.UpdateAuthSessionRequest) (*latchkeyv1.UpdateAuthSessionResponse, error) {
	return handle(ctx, a.API, req, a.update)
}

func (a AuthSessions) update(ctx context.Context, st *store.Store, req *latchkeyv1.UpdateAuthSessionRequest) (*latchkeyv1.UpdateAuthSessionResponse, error) {
	project, err := callerProject(ctx)
	if err != nil {
		return nil, err
	}
	in := req.GetAuthSession()
	paths, err := checkUpdate(in, req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, err
	}
	cur, err := st.GetSession(ctx, project, in.GetId())
	if err != nil {
		return nil, err
	}
	if err := a.updateProxySecret(ctx, cur, in, paths); err != nil {
		return nil, err
	}
	sess, err := st.UpdateSession(ctx, project, in.GetId(), in.GetEtag(), func(rec *registryv1.SessionRecord) error {
		return apply(rec, in, paths)
	})
	if err != nil {
		return nil, err
	}
	st.PublishUpdated(ctx, sess)
	out := sess.Public()
	if err := st.MarkUnattended(ctx, project, out); err != nil {
		return nil, err
	}
	return &latchkeyv1.UpdateAuthSessionResponse{AuthSession: out}, nil
}

func checkUpdate(in *latchkeyv1.AuthSession, paths []string) ([]string, error) {
	if in == nil {
		return nil, invalid("auth_session is required, with its id and the fields to change")
	}
	if len(paths) == 0 {
		return nil, invalid("update_mask is required: name the fields to change among %v", updatable)
	}
	for _, p := range paths {
		switch {
		case p == "type":
			return nil, invalid("the type of a session is fixed at creation; create a new session to change it")
		case p == "site":
			return nil, invalid("the site of a session is fixed at creation (its state belongs to that site's login); create a new session on the other site")
		case !slices.Contains(updatable, p):
			return nil, invalid("update_mask path %.80q cannot be updated: use %v", p, updatable)
		}
	}
	checks := map[string]func() error{
		"display_name": func() error { return store.CheckDisplayName(in.GetDisplayName()) },
		"labels":       func() error { return checkLabels(in.GetLabels()) },
		"proxy":        func() error { return checkProxy(in.GetProxy()) },
		"refresh":      func() error { return checkRefresh(in.GetRefresh()) },
		"recorder":     func() error { return checkRecorder(in.GetRecorder(), false) },
		"vars":         func() error { return checkVars(in.GetVars()) },
		"browser":      func() error { return checkBrowser(in.GetBrowser()) },
	}
	for _, p := range paths {
		if err := checks[p](); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

// apply copies the masked fields of in into rec.
func apply(rec *registryv1.SessionRecord, in *latchkeyv1.AuthSession, paths []string) error {
	a := rec.GetSession()
	for _, p := range paths {
		switch p {
		case "display_name":
			a.DisplayName = in.GetDisplayName()
		case "labels":
			a.Labels = in.GetLabels()
		case "proxy":
			a.Proxy = publicProxy(in.GetProxy())
			if in.GetProxy() == nil || in.GetProxy().GetPassword() != "" {
				rec.ProxyHasPassword = in.GetProxy().GetPassword() != ""
			}
		case "refresh":
			a.Refresh = in.GetRefresh()
		case "recorder":
			if a.GetType() != latchkeyv1.SessionType_SESSION_TYPE_RECORDER && in.GetRecorder() != nil {
				return invalid("recorder settings are only for RECORDER sessions")
			}
			if a.GetType() == latchkeyv1.SessionType_SESSION_TYPE_RECORDER && in.GetRecorder() == nil {
				return invalid("a RECORDER session needs recorder settings")
			}
			a.Recorder = in.GetRecorder()
		case "vars":
			a.Vars = in.GetVars()
		case "browser":
			a.Browser = in.GetBrowser()
		}
	}
	return nil
}

// updateProxySecret stores a new proxy password, or deletes the old one when the
// proxy is removed. A proxy updated without a password keeps the stored one.
func (a AuthSessions) updateProxySecret(ctx context.Context, cur store.Session, in *latchkeyv1.AuthSession, paths []string) error {
	if !slices.Contains(paths, "proxy") {
		return nil
	}
	s := cur.Rec.GetSession()
	if in.GetEtag() != 0 && in.GetEtag() != cur.Etag {
		return errs.New(errs.ErrStale, "auth session %q changed: etag %d is stale, the current one is %d; read it again and retry", s.GetId(), in.GetEtag(), cur.Etag).WithDetail(cur.Public())
	}
	switch {
	case in.GetProxy().GetPassword() != "":
		return a.putSecret(ctx, s.GetProjectId(), proxySecret(s.GetId()), map[string]string{"password": in.GetProxy().GetPassword()})
	case in.GetProxy() == nil && cur.Rec.GetProxyHasPassword():
		_, err := a.d.Vault.DeleteSecret(ctx, &vaultv1.DeleteSecretRequest{ProjectId: s.GetProjectId(), SecretId: proxySecret(s.GetId())})
		if err != nil {
			return a.peer(ctx, "the credential vault", err)
		}
	}
	return nil
}
