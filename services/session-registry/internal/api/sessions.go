package api

import (
	"context"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/domain"
	"github.com/latchkey/latchkey/libs/errs"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/services/session-registry/internal/store"
)

// Vault secret ids of a session (docs/decisions.md); the scheduler and the runner name
// them too, so they live in libs/domain.
var (
	credentialsSecret = domain.CredentialsSecret
	pendingSecret     = domain.PendingCredentialsSecret
	proxySecret       = domain.ProxySecret
)

// AuthSessions is latchkey.v1.AuthSessionService.
type AuthSessions struct {
	latchkeyv1.UnimplementedAuthSessionServiceServer
	*API
}

// CreateAuthSession creates a session. CREDENTIALS sessions store their credentials in
// the vault; CREDENTIALS and RUNTIME sessions start an AUTHSESSION_CREATE Run on the
// scheduler. If a step fails, what was written is taken back.
func (a AuthSessions) CreateAuthSession(ctx context.Context, req *latchkeyv1.CreateAuthSessionRequest) (*latchkeyv1.CreateAuthSessionResponse, error) {
	return handle(ctx, a.API, req, a.create)
}

func (a AuthSessions) create(ctx context.Context, st *store.Store, req *latchkeyv1.CreateAuthSessionRequest) (*latchkeyv1.CreateAuthSessionResponse, error) {
	project, err := callerProject(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkCreate(req); err != nil {
		return nil, err
	}
	if err := a.requireAuthAPIs(ctx, st, project, req.GetSite(), req.GetType()); err != nil {
		return nil, err
	}
	id := req.GetAuthSessionId()
	if id == "" {
		id = store.NewSessionID()
	}
	sess, err := st.CreateSession(ctx, &registryv1.SessionRecord{
		Session: &latchkeyv1.AuthSession{
			Id: id, ProjectId: project, DisplayName: req.GetDisplayName(), Type: req.GetType(),
			State: latchkeyv1.SessionState_SESSION_STATE_PENDING, Labels: req.GetLabels(), Proxy: publicProxy(req.GetProxy()),
			Refresh: req.GetRefresh(), Recorder: req.GetRecorder(), Vars: req.GetVars(), Browser: req.GetBrowser(),
			Site: domain.Site(req.GetSite()),
		},
		ProxyHasPassword: req.GetProxy().GetPassword() != "",
	})
	if err != nil {
		return nil, err
	}
	runID, err := a.provision(ctx, sess, req)
	if err != nil {
		a.undoCreate(ctx, st, sess)
		return nil, err
	}
	st.PublishCreated(ctx, sess, runID)
	a.d.Log.InfoContext(ctx, "auth session created", "project_id", project, "auth_session_id", id, "type", req.GetType().String(), "run_id", runID)
	out := sess.Public()
	// The session exists and its login has started: a bundle that cannot be read
	// now leaves the flag unset rather than failing the call.
	if err := st.MarkUnattended(ctx, project, out); err != nil {
		a.d.Log.WarnContext(ctx, "could not tell whether the session logs in unattended", "auth_session_id", id, "error", err)
	}
	return &latchkeyv1.CreateAuthSessionResponse{AuthSession: out, CreateRunId: runID}, nil
}

// requireAuthAPIs refuses a session the site's newest bundle cannot log in or check.
func (a AuthSessions) requireAuthAPIs(ctx context.Context, st *store.Store, project, site string, typ latchkeyv1.SessionType) error {
	need := []string{recipe.CreateAPI, recipe.CheckAPI}
	if typ == latchkeyv1.SessionType_SESSION_TYPE_RECORDER {
		need = need[1:]
	}
	b, err := st.GetBundle(ctx, project, site, 0)
	if err != nil && !errorsIsNotFound(err) {
		return err
	}
	for _, api := range need {
		if !slices.ContainsFunc(b.GetAutomations(), func(au *latchkeyv1.Automation) bool { return au.GetName() == api }) {
			return errs.New(errs.ErrPrecondition, "the automations deployed to %s do not define %s: deploy a bundle with auth-sessions/create and auth-sessions/check first (`%s`)", domain.SiteOf("", site), api, domain.DeployCommand(site))
		}
	}
	return nil
}

// publicProxy is the proxy as stored in the record: without its password.
func publicProxy(p *latchkeyv1.Proxy) *latchkeyv1.Proxy {
	if p == nil {
		return nil
	}
	c := proto.CloneOf(p)
	c.Password = ""
	return c
}

// provision stores a new session's secrets in the vault and starts its create Run.
func (a AuthSessions) provision(ctx context.Context, sess store.Session, req *latchkeyv1.CreateAuthSessionRequest) (string, error) {
	s := sess.Rec.GetSession()
	if s.GetType() == latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS {
		if err := a.putSecret(ctx, s.GetProjectId(), credentialsSecret(s.GetId()), req.GetCredentials()); err != nil {
			return "", err
		}
	}
	if pw := req.GetProxy().GetPassword(); pw != "" {
		if err := a.putSecret(ctx, s.GetProjectId(), proxySecret(s.GetId()), map[string]string{"password": pw}); err != nil {
			return "", err
		}
	}
	if s.GetType() == latchkeyv1.SessionType_SESSION_TYPE_RECORDER {
		return "", nil
	}
	run := &latchkeyv1.StartRunRequest{
		Api: recipe.CreateAPI, AuthSessionId: s.GetId(), Kind: latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE,
		IdempotencyKey: "registry-create-" + s.GetId() + "-" + sess.Rec.GetUid(),
	}
	if s.GetType() == latchkeyv1.SessionType_SESSION_TYPE_RUNTIME {
		run.Credentials = req.GetCredentials()
	}
	return a.startRun(ctx, s.GetProjectId(), run)
}

func (a *API) putSecret(ctx context.Context, project, id string, fields map[string]string) error {
	_, err := a.d.Vault.PutSecret(ctx, &vaultv1.PutSecretRequest{ProjectId: project, SecretId: id, Fields: fields, Overwrite: true})
	if err != nil {
		return a.peer(ctx, "the credential vault", err)
	}
	return nil
}

func (a *API) startRun(ctx context.Context, project string, req *latchkeyv1.StartRunRequest) (string, error) {
	resp, err := a.d.Runs.StartRun(server.ForProject(ctx, project), req)
	if err != nil {
		return "", a.peer(ctx, "the scheduler", err)
	}
	return resp.GetRun().GetId(), nil
}

// undoCreate takes back a session whose provisioning failed: its secrets and record.
func (a AuthSessions) undoCreate(ctx context.Context, st *store.Store, sess store.Session) {
	ctx = context.WithoutCancel(ctx)
	s := sess.Rec.GetSession()
	for _, secret := range []string{credentialsSecret(s.GetId()), proxySecret(s.GetId())} {
		if _, err := a.d.Vault.DeleteSecret(ctx, &vaultv1.DeleteSecretRequest{ProjectId: s.GetProjectId(), SecretId: secret}); err != nil {
			a.d.Log.ErrorContext(ctx, "secret left behind by a failed session create", "project_id", s.GetProjectId(), "secret_id", secret, "error", err)
		}
	}
	if err := st.DiscardSession(ctx, s.GetProjectId(), s.GetId(), sess.Etag); err != nil {
		a.d.Log.ErrorContext(ctx, "session left behind by a failed create", "project_id", s.GetProjectId(), "auth_session_id", s.GetId(), "error", err)
	}
}

// GetAuthSession returns one of the caller's sessions.
func (a AuthSessions) GetAuthSession(ctx context.Context, req *latchkeyv1.GetAuthSessionRequest) (*latchkeyv1.GetAuthSessionResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *latchkeyv1.GetAuthSessionRequest) (*latchkeyv1.GetAuthSessionResponse, error) {
		project, err := callerProject(ctx)
		if err != nil {
			return nil, err
		}
		sess, err := st.GetSession(ctx, project, req.GetAuthSessionId())
		if err != nil {
			return nil, err
		}
		out := sess.Public()
		if err := st.MarkUnattended(ctx, project, out); err != nil {
			return nil, err
		}
		return &latchkeyv1.GetAuthSessionResponse{AuthSession: out}, nil
	})
}

// ListAuthSessions lists the caller's sessions, filtered by state and labels.
func (a AuthSessions) ListAuthSessions(ctx context.Context, req *latchkeyv1.ListAuthSessionsRequest) (*latchkeyv1.ListAuthSessionsResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *latchkeyv1.ListAuthSessionsRequest) (*latchkeyv1.ListAuthSessionsResponse, error) {
		project, err := callerProject(ctx)
		if err != nil {
			return nil, err
		}
		if err := checkStates(req.GetStates()); err != nil {
			return nil, err
		}
		f := store.Filter{States: req.GetStates(), Labels: req.GetLabelSelector().GetMatchLabels()}
		list, next, err := st.ListSessions(ctx, project, f, store.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
		if err != nil {
			return nil, err
		}
		if err := st.MarkUnattended(ctx, project, list...); err != nil {
			return nil, err
		}
		return &latchkeyv1.ListAuthSessionsResponse{AuthSessions: list, PageInfo: &latchkeyv1.PageInfo{NextPageToken: next}}, nil
	})
}

// DeleteAuthSession deletes a session, its states and its vault secrets. The secrets
// go first: if the vault cannot delete them, the session stays.
func (a AuthSessions) DeleteAuthSession(ctx context.Context, req *latchkeyv1.DeleteAuthSessionRequest) (*latchkeyv1.DeleteAuthSessionResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *latchkeyv1.DeleteAuthSessionRequest) (*latchkeyv1.DeleteAuthSessionResponse, error) {
		project, err := callerProject(ctx)
		if err != nil {
			return nil, err
		}
		id := req.GetAuthSessionId()
		sess, err := st.GetSession(ctx, project, id)
		if err != nil {
			return nil, err
		}
		var secrets []string
		if sess.Rec.GetSession().GetType() == latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS {
			secrets = append(secrets, credentialsSecret(id), pendingSecret(id))
		}
		if sess.Rec.GetProxyHasPassword() {
			secrets = append(secrets, proxySecret(id))
		}
		for _, secret := range secrets {
			if _, err := a.d.Vault.DeleteSecret(ctx, &vaultv1.DeleteSecretRequest{ProjectId: project, SecretId: secret}); err != nil {
				return nil, a.peer(ctx, "the credential vault", err)
			}
		}
		if _, err := st.DeleteSession(ctx, project, id); err != nil {
			return nil, err
		}
		a.d.Log.InfoContext(ctx, "auth session deleted", "project_id", project, "auth_session_id", id)
		return &latchkeyv1.DeleteAuthSessionResponse{}, nil
	})
}

// CreateRecorderUrl starts an AUTHSESSION_RECORD Run for a RECORDER session (a runner
// opens a browser at the session's recorder.start_url) and returns the one-time URL
// of the page through which a person logs in (recorder.go).
func (a AuthSessions) CreateRecorderUrl(ctx context.Context, req *latchkeyv1.CreateRecorderUrlRequest) (*latchkeyv1.CreateRecorderUrlResponse, error) {
	return handle(ctx, a.API, req, a.recorderURL)
}
