package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/domain"
	"github.com/latchkey/latchkey/libs/errs"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
)

// MaxBundleBytes bounds the total size of a bundle's files, so a version fits one KV
// value (NATS messages are at most 1 MiB by default).
const MaxBundleBytes = 768 << 10

// Sites: a project keeps one bundle history per site. The default site's keys are the
// ones every project's single bundle had before sites existed (<project>.head and
// <project>.<version>), so existing projects need no migration; another site's are
// <project>.<site>.head and <project>.<site>.<version>. Token counts keep the two
// apart whatever a site is named.

// headKey is the LK_AUTOMATIONS key of a site's BundleHead.
func headKey(projectID, site string) string {
	if site = domain.Site(site); site == domain.DefaultSite {
		return projectID + ".head"
	}
	return projectID + "." + site + ".head"
}

// versionKey is the LK_AUTOMATIONS key of one version of a site's bundle.
func versionKey(projectID, site string, version int64) string {
	v := strconv.FormatInt(version, 10)
	if site = domain.Site(site); site == domain.DefaultSite {
		return projectID + "." + v
	}
	return projectID + "." + site + "." + v
}

// CheckSite refuses a name no site can have (domain.CheckSite) as ErrInvalid.
func CheckSite(site string) error {
	if err := domain.CheckSite(site); err != nil {
		return errs.New(errs.ErrInvalid, "%v", err)
	}
	return nil
}

// DeployBundle validates files with libs/recipe and stores them as the site's next
// version; other sites are not touched. requireAuth demands auth-sessions/create and
// auth-sessions/check (the site has sessions). An invalid bundle answers ErrInvalid
// naming file, API and step, and stores nothing.
func (s *Store) DeployBundle(ctx context.Context, projectID, site string, files []*latchkeyv1.BundleFile, requireAuth bool) (*latchkeyv1.Bundle, error) {
	if err := CheckID("project id", projectID); err != nil {
		return nil, err
	}
	if err := CheckSite(site); err != nil {
		return nil, err
	}
	total := 0
	rfiles := make([]recipe.File, 0, len(files))
	for _, f := range files {
		total += len(f.GetContent())
		rfiles = append(rfiles, recipe.File{Path: f.GetPath(), Content: f.GetContent()})
	}
	if total > MaxBundleBytes {
		return nil, errs.New(errs.ErrTooLarge, "the bundle's files total %d bytes, at most %d are allowed", total, MaxBundleBytes)
	}
	parsed, err := recipe.Parse(rfiles, recipe.Options{RequireAuthSessions: requireAuth})
	if err != nil {
		if errors.Is(err, recipe.ErrInvalid) {
			return nil, errs.New(errs.ErrInvalid, "%s", strings.ReplaceAll(err.Error(), "\n", "; "))
		}
		return nil, fmt.Errorf("parsing bundle: %w", err)
	}
	b := &latchkeyv1.Bundle{
		ProjectId: projectID, Site: domain.Site(site), Automations: automationsOf(parsed), Digest: digest(files),
		CreateTime: timestamppb.New(s.opts.Now()),
	}
	for _, f := range files {
		b.Files = append(b.Files, &latchkeyv1.BundleFile{Path: f.GetPath(), Content: f.GetContent()})
	}
	slices.SortFunc(b.Files, func(x, y *latchkeyv1.BundleFile) int { return strings.Compare(x.GetPath(), y.GetPath()) })
	if err := s.storeNextVersion(ctx, b); err != nil {
		return nil, err
	}
	return b, nil
}

// storeNextVersion writes b under the first free version above the head, then moves
// the head to it with compare-and-swap. When a concurrent deploy moved the head past
// it, the version is withdrawn and the deploy starts over, so the head only grows and
// never names a bundle another deploy wrote.
func (s *Store) storeNextVersion(ctx context.Context, b *latchkeyv1.Bundle) error {
	headKey := headKey(b.GetProjectId(), b.GetSite())
	for range bus.DefaultUpdateAttempts {
		head := &registryv1.BundleHead{}
		rev, err := getProto(ctx, s.bundles, headKey, head)
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("reading bundle head: %w", err)
		}
		vkey, err := s.createVersion(ctx, b, head.GetVersion()+1)
		if err != nil {
			return err
		}
		overtaken := false
		for range bus.DefaultUpdateAttempts {
			moved, err := s.moveHead(ctx, headKey, &registryv1.BundleHead{Version: b.GetVersion(), CreateAlwaysAsks: createAlwaysAsks(b)}, rev)
			if err != nil || moved {
				if err != nil {
					_ = s.bundles.Purge(context.WithoutCancel(ctx), vkey)
				}
				return err
			}
			head.Reset()
			if rev, err = getProto(ctx, s.bundles, headKey, head); err != nil {
				_ = s.bundles.Purge(context.WithoutCancel(ctx), vkey)
				return fmt.Errorf("reading bundle head: %w", err)
			}
			if head.GetVersion() >= b.GetVersion() {
				overtaken = true
				break // overtaken: start over above the new head
			}
		}
		// Overtaken, or the head kept moving below this version: withdraw it.
		_ = s.bundles.Purge(context.WithoutCancel(ctx), vkey)
		if !overtaken {
			break
		}
	}
	return fmt.Errorf("deploying bundle: %w: too many concurrent deploys", bus.ErrContention)
}

// createVersion stores b under the first version from v on that is not taken.
func (s *Store) createVersion(ctx context.Context, b *latchkeyv1.Bundle, v int64) (string, error) {
	for ; ; v++ {
		b.Version = v
		val, err := marshal(b)
		if err != nil {
			return "", err
		}
		vkey := versionKey(b.GetProjectId(), b.GetSite(), v)
		_, err = s.bundles.Create(ctx, vkey, val)
		if err == nil {
			return vkey, nil
		}
		if !bus.IsConflict(err) {
			return "", fmt.Errorf("storing bundle: %w", err)
		}
	}
}

// moveHead sets the head to next if it is still at revision rev (0: absent).
func (s *Store) moveHead(ctx context.Context, headKey string, next *registryv1.BundleHead, rev uint64) (bool, error) {
	hb, err := marshal(next)
	if err != nil {
		return false, err
	}
	if rev == 0 {
		_, err = s.bundles.Create(ctx, headKey, hb)
	} else {
		_, err = s.bundles.Update(ctx, headKey, hb, rev)
	}
	switch {
	case err == nil:
		return true, nil
	case bus.IsConflict(err):
		return false, nil
	}
	return false, fmt.Errorf("moving bundle head: %w", err)
}

func automationsOf(b *recipe.Bundle) []*latchkeyv1.Automation {
	out := make([]*latchkeyv1.Automation, 0, len(b.APIs))
	for _, api := range b.APIs {
		out = append(out, &latchkeyv1.Automation{
			Name: api.Name, File: api.File, Description: strings.TrimSpace(api.Description), StepCount: int32(len(api.Steps)),
			AlwaysAsks: slices.ContainsFunc(api.Steps, func(s *recipe.Step) bool { return s.Kind == recipe.Ask && s.When == nil }),
		})
	}
	slices.SortFunc(out, func(x, y *latchkeyv1.Automation) int { return strings.Compare(x.GetName(), y.GetName()) })
	return out
}

// digest is the hex SHA-256 over the files in path order (path, NUL, content, NUL).
func digest(files []*latchkeyv1.BundleFile) string {
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(x, y *latchkeyv1.BundleFile) int { return strings.Compare(x.GetPath(), y.GetPath()) })
	h := sha256.New()
	for _, f := range sorted {
		h.Write([]byte(f.GetPath()))
		h.Write([]byte{0})
		h.Write(f.GetContent())
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// BundleHeadVersion returns the site's newest deployed version, 0 when none.
func (s *Store) BundleHeadVersion(ctx context.Context, projectID, site string) (int64, error) {
	head, err := s.bundleHead(ctx, projectID, site)
	return head.GetVersion(), err
}

func (s *Store) bundleHead(ctx context.Context, projectID, site string) (*registryv1.BundleHead, error) {
	if err := CheckID("project id", projectID); err != nil {
		return nil, err
	}
	if err := CheckSite(site); err != nil {
		return nil, err
	}
	head := &registryv1.BundleHead{}
	if _, err := getProto(ctx, s.bundles, headKey(projectID, site), head); err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("reading bundle head: %w", err)
	}
	return head, nil
}

// GetBundle returns a version of the site's bundle with its files; 0 means the newest.
func (s *Store) GetBundle(ctx context.Context, projectID, site string, version int64) (*latchkeyv1.Bundle, error) {
	if err := CheckID("project id", projectID); err != nil {
		return nil, err
	}
	if err := CheckSite(site); err != nil {
		return nil, err
	}
	if version < 0 {
		return nil, errs.New(errs.ErrInvalid, "version must be positive, or 0 for the newest")
	}
	if version == 0 {
		v, err := s.BundleHeadVersion(ctx, projectID, site)
		if err != nil {
			return nil, err
		}
		if v == 0 {
			return nil, errs.New(errs.ErrNotFound, "no bundle is deployed to %s: deploy one with `%s`", domain.SiteOf(projectID, site), domain.DeployCommand(site))
		}
		version = v
	}
	b := &latchkeyv1.Bundle{}
	if _, err := getProto(ctx, s.bundles, versionKey(projectID, site, version), b); err != nil {
		if isNotFound(err) {
			return nil, errs.New(errs.ErrNotFound, "bundle version %d not found for site %q in project %q", version, domain.Site(site), projectID)
		}
		return nil, fmt.Errorf("reading bundle: %w", err)
	}
	if b.GetSite() == "" {
		b.Site = domain.DefaultSite // stored before sites existed
	}
	return b, nil
}

// ListBundles lists the site's deployed versions newest first, without their files.
func (s *Store) ListBundles(ctx context.Context, projectID, site string, page Page) ([]*latchkeyv1.Bundle, string, error) {
	size, err := page.size()
	if err != nil {
		return nil, "", err
	}
	scope := "bundles/" + projectID + "/" + domain.Site(site)
	after, err := page.after(scope)
	if err != nil {
		return nil, "", err
	}
	from, err := s.BundleHeadVersion(ctx, projectID, site)
	if err != nil {
		return nil, "", err
	}
	if after != "" {
		v, perr := strconv.ParseInt(after, 10, 64)
		if perr != nil || v < 1 {
			return nil, "", errs.New(errs.ErrInvalid, "page_token is not valid for this list")
		}
		from = min(from, v-1)
	}
	var out []*latchkeyv1.Bundle
	for v := from; v >= 1; v-- {
		if len(out) == size {
			return out, nextToken(scope, strconv.FormatInt(v+1, 10)), nil
		}
		b, err := s.GetBundle(ctx, projectID, site, v)
		if errors.Is(err, errs.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		b = proto.CloneOf(b)
		b.Files = nil
		out = append(out, b)
	}
	return out, "", nil
}

// ListSites lists the project's sites that have a deployed bundle, by name.
func (s *Store) ListSites(ctx context.Context, projectID string) ([]*latchkeyv1.Site, error) {
	if err := CheckID("project id", projectID); err != nil {
		return nil, err
	}
	var out []*latchkeyv1.Site
	add := func(name string, e jetstream.KeyValueEntry) error {
		head := &registryv1.BundleHead{}
		if err := proto.Unmarshal(e.Value(), head); err != nil {
			return fmt.Errorf("reading bundle head %s: %w", e.Key(), err)
		}
		out = append(out, &latchkeyv1.Site{Name: name, BundleVersion: head.GetVersion()})
		return nil
	}
	err := bus.Scan(ctx, s.bundles, headKey(projectID, ""), false, func(e jetstream.KeyValueEntry) error { return add(domain.DefaultSite, e) })
	if err != nil {
		return nil, err
	}
	err = bus.Scan(ctx, s.bundles, projectID+".*.head", false, func(e jetstream.KeyValueEntry) error {
		return add(strings.Split(e.Key(), ".")[1], e)
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(x, y *latchkeyv1.Site) int { return strings.Compare(x.GetName(), y.GetName()) })
	return out, nil
}

// MarkUnattended sets can_login_unattended on sessions of project read through the
// public API: false for RECORDER sessions and, when the newest bundle of the session's
// site has a create recipe that always asks the caller, for every session of that
// site; true otherwise (no bundle yet counts as unattended: nothing says otherwise).
// It reads each site's head once.
func (s *Store) MarkUnattended(ctx context.Context, project string, sessions ...*latchkeyv1.AuthSession) error {
	asks := map[string]bool{}
	for _, a := range sessions {
		site := domain.Site(a.GetSite())
		always, ok := asks[site]
		if !ok {
			head, err := s.bundleHead(ctx, project, site)
			if err != nil {
				return err
			}
			always = head.GetCreateAlwaysAsks()
			asks[site] = always
		}
		a.CanLoginUnattended = a.GetType() != latchkeyv1.SessionType_SESSION_TYPE_RECORDER && !always
	}
	return nil
}

// createAlwaysAsks reports whether b's create recipe asks the caller at every login.
func createAlwaysAsks(b *latchkeyv1.Bundle) bool {
	for _, a := range b.GetAutomations() {
		if a.GetName() == recipe.CreateAPI {
			return a.GetAlwaysAsks()
		}
	}
	return false
}
