package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/errs"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// portalBundle reads the demo portal's recipe bundle.
func portalBundle(t testing.TB) []*latchkeyv1.BundleFile {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "..", "examples", "portal", "automations")
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("reading %s: %v", dir, err)
	}
	var files []*latchkeyv1.BundleFile
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, &latchkeyv1.BundleFile{Path: filepath.Base(p), Content: b})
	}
	return files
}

func file(path, content string) *latchkeyv1.BundleFile {
	return &latchkeyv1.BundleFile{Path: path, Content: []byte(content)}
}

func TestDeployBundle(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{})
	ctx := t.Context()
	e.project(t, "acme")
	_, err := e.s.GetBundle(ctx, "acme", "", 0)
	wantKind(t, err, errs.ErrNotFound)

	b1, err := e.s.DeployBundle(ctx, "acme", "", portalBundle(t), true)
	if err != nil {
		t.Fatal(err)
	}
	if b1.GetVersion() != 1 || len(b1.GetDigest()) != 64 {
		t.Fatalf("first deploy: version %d digest %q", b1.GetVersion(), b1.GetDigest())
	}
	var names []string
	for _, a := range b1.GetAutomations() {
		names = append(names, a.GetName())
		if a.GetStepCount() == 0 || a.GetFile() == "" {
			t.Errorf("automation %v lacks file or steps", a)
		}
	}
	if got := strings.Join(names, ","); !strings.Contains(got, "auth-sessions/check,auth-sessions/create") || !strings.Contains(got, "list-invoices") {
		t.Errorf("automations %s", got)
	}
	b2, err := e.s.DeployBundle(ctx, "acme", "", []*latchkeyv1.BundleFile{file("x.yaml", "apis:\n  ping:\n    steps:\n      - goto: http://x\n")}, false)
	if err != nil || b2.GetVersion() != 2 {
		t.Fatalf("second deploy = %v, %v", b2, err)
	}
	newest, err := e.s.GetBundle(ctx, "acme", "", 0)
	if err != nil || newest.GetVersion() != 2 || len(newest.GetFiles()) != 1 {
		t.Fatalf("newest = %v, %v", newest, err)
	}
	old, err := e.s.GetBundle(ctx, "acme", "", 1)
	if err != nil || old.GetDigest() != b1.GetDigest() || len(old.GetFiles()) != len(portalBundle(t)) {
		t.Fatalf("version 1 = %v, %v", old, err)
	}
	_, err = e.s.GetBundle(ctx, "acme", "", 9)
	wantKind(t, err, errs.ErrNotFound)
	_, err = e.s.GetBundle(ctx, "acme", "", -1)
	wantKind(t, err, errs.ErrInvalid)

	list, next, err := e.s.ListBundles(ctx, "acme", "", Page{Size: 1})
	if err != nil || len(list) != 1 || list[0].GetVersion() != 2 || list[0].GetFiles() != nil || next == "" {
		t.Fatalf("first page = %v, %q, %v", list, next, err)
	}
	list, next, err = e.s.ListBundles(ctx, "acme", "", Page{Size: 1, Token: next})
	if err != nil || len(list) != 1 || list[0].GetVersion() != 1 || next != "" {
		t.Fatalf("second page = %v, %q, %v", list, next, err)
	}
	_, _, err = e.s.ListBundles(ctx, "other", "", Page{Token: nextToken("bundles/acme/default", "2")})
	wantKind(t, err, errs.ErrInvalid)
}

func TestDeployBundleRefusesBadBundles(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{})
	ctx := t.Context()
	e.project(t, "acme")
	if _, err := e.s.DeployBundle(ctx, "acme", "", portalBundle(t), true); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("# padding\n", MaxBundleBytes/10+1)
	cases := []struct {
		name        string
		files       []*latchkeyv1.BundleFile
		requireAuth bool
		kind        error
		mentions    []string
	}{
		{"invalid yaml", []*latchkeyv1.BundleFile{file("bad.yaml", "apis: [unclosed")}, false, errs.ErrInvalid, []string{"bad.yaml", "invalid YAML"}},
		{"unknown step kind", []*latchkeyv1.BundleFile{file("a.yaml", "apis:\n  ping:\n    steps:\n      - teleport: x\n")}, false, errs.ErrInvalid, []string{"a.yaml", "api ping", "step 0"}},
		{"bad template", []*latchkeyv1.BundleFile{file("t.yaml", "apis:\n  ping:\n    steps:\n      - goto: \"{{ .Vars.x \"\n")}, false, errs.ErrInvalid, []string{"t.yaml", "api ping", "step 0"}},
		{"missing create and check", []*latchkeyv1.BundleFile{file("a.yaml", "apis:\n  ping:\n    steps:\n      - goto: http://x\n")}, true, errs.ErrInvalid, []string{"auth-sessions/create", "auth-sessions/check"}},
		{"no files", nil, false, errs.ErrInvalid, []string{"no files"}},
		{"bad path", []*latchkeyv1.BundleFile{file("../x.yaml", "apis: {}")}, false, errs.ErrInvalid, []string{"../x.yaml"}},
		{"too large", []*latchkeyv1.BundleFile{file("a.yaml", big), file("b.yaml", big)}, false, errs.ErrTooLarge, []string{"at most"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.s.DeployBundle(ctx, "acme", "", tc.files, tc.requireAuth)
			wantKind(t, err, tc.kind)
			for _, m := range tc.mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if v, err := e.s.BundleHeadVersion(ctx, "acme", ""); err != nil || v != 1 {
				t.Errorf("head moved to %d (%v) after a refused deploy", v, err)
			}
		})
	}
}

func TestConcurrentDeploysGetDistinctVersions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{})
	ctx := t.Context()
	e.project(t, "acme")
	const n = 8
	versions := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			content := fmt.Sprintf("apis:\n  api-%d:\n    steps:\n      - goto: http://x\n", i)
			b, err := e.s.DeployBundle(ctx, "acme", "", []*latchkeyv1.BundleFile{file("a.yaml", content)}, false)
			if err != nil {
				t.Error(err)
				return
			}
			versions[i] = b.GetVersion()
		})
	}
	wg.Wait()
	seen := map[int64]bool{}
	var highest int64
	for i, v := range versions {
		if seen[v] {
			t.Fatalf("version %d given twice: %v", v, versions)
		}
		seen[v] = true
		highest = max(highest, v)
		b, err := e.s.GetBundle(ctx, "acme", "", v)
		if err != nil || b.GetAutomations()[0].GetName() != fmt.Sprintf("api-%d", i) {
			t.Fatalf("version %d holds %v (%v), want deploy %d's bundle", v, b.GetAutomations(), err, i)
		}
	}
	if head, _ := e.s.BundleHeadVersion(ctx, "acme", ""); head != highest {
		t.Fatalf("head %d, highest version %d", head, highest)
	}
}

// A project keeps one bundle history per site: deploying one site's bundle never
// moves another's, and the default site reads bundles stored before sites existed.
func TestSitesKeepTheirOwnBundles(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, Options{})
	ctx := t.Context()
	e.project(t, "acme")

	// A project as the code before sites left it: <project>.1 and <project>.head,
	// the bundle without a site.
	legacy := &latchkeyv1.Bundle{ProjectId: "acme", Version: 1, Digest: "old", Files: portalBundle(t)}
	if _, err := e.s.bundles.Put(ctx, "acme.1", mustMarshal(t, legacy)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.bundles.Put(ctx, "acme.head", mustMarshal(t, &registryv1.BundleHead{Version: 1})); err != nil {
		t.Fatal(err)
	}
	got, err := e.s.GetBundle(ctx, "acme", "default", 0)
	if err != nil || got.GetDigest() != "old" || got.GetSite() != "default" {
		t.Fatalf("the default site reads the pre-sites bundle: %v, %v", got, err)
	}

	ping := []*latchkeyv1.BundleFile{file("x.yaml", "apis:\n  ping:\n    steps:\n      - goto: http://x\n")}
	crm, err := e.s.DeployBundle(ctx, "acme", "crm", ping, false)
	if err != nil || crm.GetVersion() != 1 || crm.GetSite() != "crm" {
		t.Fatalf("first deploy to crm = %v, %v", crm, err)
	}
	if crm, err = e.s.DeployBundle(ctx, "acme", "crm", ping, false); err != nil || crm.GetVersion() != 2 {
		t.Fatalf("second deploy to crm = %v, %v", crm, err)
	}
	def, err := e.s.GetBundle(ctx, "acme", "", 0)
	if err != nil || def.GetVersion() != 1 || def.GetDigest() != "old" {
		t.Fatalf("deploying crm moved the default site: %v, %v", def, err)
	}
	if b, err := e.s.GetBundle(ctx, "acme", "crm", 1); err != nil || b.GetSite() != "crm" || len(b.GetFiles()) != 1 {
		t.Fatalf("crm version 1 = %v, %v", b, err)
	}
	if d2, err := e.s.DeployBundle(ctx, "acme", "", portalBundle(t), false); err != nil || d2.GetVersion() != 2 || d2.GetSite() != "default" {
		t.Fatalf("deploy to default = %v, %v", d2, err)
	}
	if v, err := e.s.BundleHeadVersion(ctx, "acme", "crm"); err != nil || v != 2 {
		t.Fatalf("deploying default moved crm to %d, %v", v, err)
	}
	list, _, err := e.s.ListBundles(ctx, "acme", "crm", Page{})
	if err != nil || len(list) != 2 || list[0].GetSite() != "crm" {
		t.Fatalf("crm's list = %v, %v", list, err)
	}
	sites, err := e.s.ListSites(ctx, "acme")
	if err != nil || len(sites) != 2 || sites[0].GetName() != "crm" || sites[0].GetBundleVersion() != 2 ||
		sites[1].GetName() != "default" || sites[1].GetBundleVersion() != 2 {
		t.Fatalf("sites = %v, %v", sites, err)
	}

	_, err = e.s.GetBundle(ctx, "acme", "hr", 0)
	wantKind(t, err, errs.ErrNotFound)
	if err == nil || !strings.Contains(err.Error(), "-site hr") {
		t.Errorf("a site without a bundle should say how to deploy one: %v", err)
	}
	for _, bad := range []string{"CRM", "-crm", "crm.eu", "crm*", strings.Repeat("a", 64)} {
		_, err := e.s.DeployBundle(ctx, "acme", bad, ping, false)
		wantKind(t, err, errs.ErrInvalid)
	}
	// The sessions of one site require auth APIs of that site only.
	e.session(t, "acme", "s1", latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS)
	if has, err := e.s.HasSessions(ctx, "acme", "crm"); err != nil || has {
		t.Fatalf("crm has sessions = %v, %v (the only session is on default)", has, err)
	}
	if has, err := e.s.HasSessions(ctx, "acme", ""); err != nil || !has {
		t.Fatalf("default has sessions = %v, %v", has, err)
	}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
