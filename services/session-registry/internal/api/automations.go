package api

import (
	"context"

	"github.com/latchkey/latchkey/libs/domain"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/services/session-registry/internal/store"
)

// Automations is latchkey.v1.AutomationService.
type Automations struct {
	latchkeyv1.UnimplementedAutomationServiceServer
	*API
}

// DeployBundle validates and stores a bundle as the newest version of a site of the
// caller's project. Once the site has AuthSessions, a bundle must define
// auth-sessions/create and auth-sessions/check.
func (a Automations) DeployBundle(ctx context.Context, req *latchkeyv1.DeployBundleRequest) (*latchkeyv1.DeployBundleResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *latchkeyv1.DeployBundleRequest) (*latchkeyv1.DeployBundleResponse, error) {
		project, err := callerProject(ctx)
		if err != nil {
			return nil, err
		}
		if err := store.CheckSite(req.GetSite()); err != nil {
			return nil, err
		}
		hasSessions, err := st.HasSessions(ctx, project, req.GetSite())
		if err != nil {
			return nil, err
		}
		b, err := st.DeployBundle(ctx, project, req.GetSite(), req.GetFiles(), hasSessions)
		if err != nil {
			return nil, err
		}
		a.d.Log.InfoContext(ctx, "bundle deployed", "project_id", project, "site", b.GetSite(), "version", b.GetVersion(), "digest", b.GetDigest())
		b.Files = nil
		return &latchkeyv1.DeployBundleResponse{Bundle: b}, nil
	})
}

// GetBundle returns one deployed version with its files.
func (a Automations) GetBundle(ctx context.Context, req *latchkeyv1.GetBundleRequest) (*latchkeyv1.GetBundleResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *latchkeyv1.GetBundleRequest) (*latchkeyv1.GetBundleResponse, error) {
		project, err := callerProject(ctx)
		if err != nil {
			return nil, err
		}
		b, err := st.GetBundle(ctx, project, req.GetSite(), req.GetVersion())
		return &latchkeyv1.GetBundleResponse{Bundle: b}, err
	})
}

// ListBundles lists deployed versions, newest first.
func (a Automations) ListBundles(ctx context.Context, req *latchkeyv1.ListBundlesRequest) (*latchkeyv1.ListBundlesResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *latchkeyv1.ListBundlesRequest) (*latchkeyv1.ListBundlesResponse, error) {
		project, err := callerProject(ctx)
		if err != nil {
			return nil, err
		}
		bs, next, err := st.ListBundles(ctx, project, req.GetSite(), store.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
		return &latchkeyv1.ListBundlesResponse{Bundles: bs, PageInfo: &latchkeyv1.PageInfo{NextPageToken: next}}, err
	})
}

// ListAutomations lists the APIs of a site's newest bundle; none before its first deploy.
func (a Automations) ListAutomations(ctx context.Context, req *latchkeyv1.ListAutomationsRequest) (*latchkeyv1.ListAutomationsResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, req *latchkeyv1.ListAutomationsRequest) (*latchkeyv1.ListAutomationsResponse, error) {
		project, err := callerProject(ctx)
		if err != nil {
			return nil, err
		}
		site := domain.Site(req.GetSite())
		v, err := st.BundleHeadVersion(ctx, project, site)
		if err != nil || v == 0 {
			return &latchkeyv1.ListAutomationsResponse{Site: site}, err
		}
		b, err := st.GetBundle(ctx, project, site, v)
		if err != nil {
			return nil, err
		}
		return &latchkeyv1.ListAutomationsResponse{Automations: b.GetAutomations(), BundleVersion: b.GetVersion(), Site: site}, nil
	})
}

// ListSites lists the sites of the caller's project that have a bundle.
func (a Automations) ListSites(ctx context.Context, req *latchkeyv1.ListSitesRequest) (*latchkeyv1.ListSitesResponse, error) {
	return handle(ctx, a.API, req, func(ctx context.Context, st *store.Store, _ *latchkeyv1.ListSitesRequest) (*latchkeyv1.ListSitesResponse, error) {
		project, err := callerProject(ctx)
		if err != nil {
			return nil, err
		}
		sites, err := st.ListSites(ctx, project)
		return &latchkeyv1.ListSitesResponse{Sites: sites}, err
	})
}
