package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"

	"github.com/latchkey/latchkey/libs/errs"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/services/session-registry/internal/store"
)

// Projects is latchkey.v1.ProjectService.
type Projects struct {
	latchkeyv1.UnimplementedProjectServiceServer
	*API
}

// CreateProject creates a project and its first API key (admin key only).
func (a Projects) CreateProject(ctx context.Context, req *latchkeyv1.CreateProjectRequest) (*latchkeyv1.CreateProjectResponse, error) {
	return handle(ctx, a.API, req, a.createProject)
}

func (a Projects) createProject(ctx context.Context, st *store.Store, req *latchkeyv1.CreateProjectRequest) (*latchkeyv1.CreateProjectResponse, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	p, err := st.CreateProject(ctx, req.GetProjectId(), req.GetDisplayName())
	if err != nil {
		return nil, err
	}
	key, secret, err := st.CreateKey(ctx, p.GetId(), "default")
	if err != nil {
		// Nothing refers to the new project yet: take it back.
		if perr := st.PurgeProject(context.WithoutCancel(ctx), p.GetId()); perr != nil {
			a.d.Log.ErrorContext(ctx, "project left behind after a failed create", "project_id", p.GetId(), "error", perr)
		}
		return nil, err
	}
	return &latchkeyv1.CreateProjectResponse{Project: p, ApiKey: key, ApiKeySecret: secret}, nil
}

// GetProject returns the caller's project (or any, with the admin key).
func (a Projects) GetProject(ctx context.Context, req *latchkeyv1.GetProjectRequest) (*latchkeyv1.GetProjectResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *latchkeyv1.GetProjectRequest) (*latchkeyv1.GetProjectResponse, error) {
		id, err := namedProject(ctx, req.GetProjectId())
		if err != nil {
			return nil, err
		}
		p, err := st.GetProject(ctx, id)
		return &latchkeyv1.GetProjectResponse{Project: p}, err
	})
}

// ListProjects lists every project (admin key only).
func (a Projects) ListProjects(ctx context.Context, req *latchkeyv1.ListProjectsRequest) (*latchkeyv1.ListProjectsResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *latchkeyv1.ListProjectsRequest) (*latchkeyv1.ListProjectsResponse, error) {
		if err := requireAdmin(ctx); err != nil {
			return nil, err
		}
		ps, next, err := st.ListProjects(ctx, store.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
		return &latchkeyv1.ListProjectsResponse{Projects: ps, PageInfo: &latchkeyv1.PageInfo{NextPageToken: next}}, err
	})
}

// DeleteProject crypto-shreds a project in the vault, then deletes its records (admin
// key only). The project answers NotFound from the start; if the vault cannot shred,
// nothing changes. A DeleteProject interrupted after the shred is finished by the next.
func (a Projects) DeleteProject(ctx context.Context, req *latchkeyv1.DeleteProjectRequest) (*latchkeyv1.DeleteProjectResponse, error) {
	return handle(ctx, a.API, req, a.deleteProject)
}

func (a Projects) deleteProject(ctx context.Context, st *store.Store, req *latchkeyv1.DeleteProjectRequest) (*latchkeyv1.DeleteProjectResponse, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	id := req.GetProjectId()
	was, err := st.SetProjectDeleting(ctx, id, true)
	if err != nil {
		return nil, err
	}
	if _, err := a.d.Vault.ShredProject(ctx, &vaultv1.ShredProjectRequest{ProjectId: id}); err != nil {
		if !was {
			if _, uerr := st.SetProjectDeleting(context.WithoutCancel(ctx), id, false); uerr != nil {
				a.d.Log.ErrorContext(ctx, "project left marked deleting", "project_id", id, "error", uerr)
			}
		}
		return nil, a.peer(ctx, "the credential vault", err)
	}
	a.d.Log.InfoContext(ctx, "project crypto-shredded", "project_id", id)
	return &latchkeyv1.DeleteProjectResponse{}, st.PurgeProject(ctx, id)
}

// CreateApiKey creates a key for the caller's project.
func (a Projects) CreateApiKey(ctx context.Context, req *latchkeyv1.CreateApiKeyRequest) (*latchkeyv1.CreateApiKeyResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *latchkeyv1.CreateApiKeyRequest) (*latchkeyv1.CreateApiKeyResponse, error) {
		id, err := namedProject(ctx, req.GetProjectId())
		if err != nil {
			return nil, err
		}
		key, secret, err := st.CreateKey(ctx, id, req.GetName())
		return &latchkeyv1.CreateApiKeyResponse{ApiKey: key, ApiKeySecret: secret}, err
	})
}

// ListApiKeys lists the caller's project's keys, never their secrets.
func (a Projects) ListApiKeys(ctx context.Context, req *latchkeyv1.ListApiKeysRequest) (*latchkeyv1.ListApiKeysResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *latchkeyv1.ListApiKeysRequest) (*latchkeyv1.ListApiKeysResponse, error) {
		id, err := namedProject(ctx, req.GetProjectId())
		if err != nil {
			return nil, err
		}
		keys, err := st.ListKeys(ctx, id)
		return &latchkeyv1.ListApiKeysResponse{ApiKeys: keys}, err
	})
}

// RevokeApiKey revokes one of the caller's project's keys at once.
func (a Projects) RevokeApiKey(ctx context.Context, req *latchkeyv1.RevokeApiKeyRequest) (*latchkeyv1.RevokeApiKeyResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *latchkeyv1.RevokeApiKeyRequest) (*latchkeyv1.RevokeApiKeyResponse, error) {
		id, err := namedProject(ctx, req.GetProjectId())
		if err != nil {
			return nil, err
		}
		return &latchkeyv1.RevokeApiKeyResponse{}, st.RevokeKey(ctx, id, req.GetApiKeyId())
	})
}

// auditToken is ListAuditEntries' page token: the vault's token, bound to the project.
type auditToken struct {
	Project string `json:"p"`
	Vault   string `json:"v"`
}

// ListAuditEntries lists the decrypts and credential accesses of the caller's project,
// as the vault recorded them.
func (a Projects) ListAuditEntries(ctx context.Context, req *latchkeyv1.ListAuditEntriesRequest) (*latchkeyv1.ListAuditEntriesResponse, error) {
	return handle(ctx, a.API, req, a.listAudit)
}

func (a Projects) listAudit(ctx context.Context, _ *store.Store, req *latchkeyv1.ListAuditEntriesRequest) (*latchkeyv1.ListAuditEntriesResponse, error) {
	project, err := callerProject(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetPageSize() < 0 {
		return nil, errs.New(errs.ErrInvalid, "page_size must not be negative")
	}
	vreq := &vaultv1.ListAuditEventsRequest{ProjectId: project, ResourceId: req.GetResourceId(), PageSize: req.GetPageSize()}
	if req.GetPageToken() != "" {
		var t auditToken
		b, err := base64.RawURLEncoding.DecodeString(req.GetPageToken())
		if err == nil {
			err = json.Unmarshal(b, &t)
		}
		if err != nil || t.Project != project || t.Vault == "" {
			return nil, errs.New(errs.ErrInvalid, "page_token is not valid for this list: pass the next_page_token of the previous page, or none")
		}
		vreq.PageToken = t.Vault
	}
	vresp, err := a.d.Vault.ListAuditEvents(ctx, vreq)
	if err != nil {
		return nil, a.peer(ctx, "the credential vault", err)
	}
	out := &latchkeyv1.ListAuditEntriesResponse{PageInfo: &latchkeyv1.PageInfo{}}
	for _, ev := range vresp.GetEvents() {
		out.Entries = append(out.Entries, &latchkeyv1.AuditEntry{
			ProjectId: ev.GetProjectId(), Kind: ev.GetKind(), ResourceId: ev.GetResourceId(), Caller: ev.GetCaller(),
			Purpose: strings.TrimSpace(ev.GetReason().GetPurpose()), Time: ev.GetTime(),
		})
	}
	if next := vresp.GetNextPageToken(); next != "" {
		b, _ := json.Marshal(auditToken{Project: project, Vault: next}) // strings only: cannot fail
		out.PageInfo.NextPageToken = base64.RawURLEncoding.EncodeToString(b)
	}
	return out, nil
}
