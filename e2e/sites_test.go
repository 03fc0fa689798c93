package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// crmBundle is a second web app's bundle: the portal's login and check (another
// portal stands in for the second app) and an API the default site does not have.
func crmBundle(t *testing.T) []*latchkeyv1.BundleFile {
	t.Helper()
	auth, err := os.ReadFile(filepath.Join("..", "examples", "portal", "automations", "auth-sessions.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return []*latchkeyv1.BundleFile{
		{Path: "auth-sessions.yaml", Content: auth},
		{Path: "crm.yaml", Content: []byte(`apis:
  crm-account:
    description: The account name, as the CRM shows it.
    steps:
      - goto: "{{ .Vars.baseURL }}/invoices"
      - waitVisible: "#account-name"
      - extract: { as: account, selector: "#account-name" }
`)},
	}
}

// TestTwoSitesInOneProject: one project (one key) holds two sites' bundles and a
// session on each; deploying one site's bundle never moves the other's; when both
// sites log their sessions out, each session logs in once at its own site and its
// Runs succeed.
func TestTwoSitesInOneProject(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{}) // the portal's bundle on the default site
	crm, crmURL := portaltest.Start(t, portal.Config{})
	ctx := t.Context()
	ac := latchkeyv1.NewAutomationServiceClient(w.conn)

	dep, err := ac.DeployBundle(ctx, &latchkeyv1.DeployBundleRequest{Site: "crm", Files: crmBundle(t)})
	if err != nil || dep.GetBundle().GetSite() != "crm" || dep.GetBundle().GetVersion() != 1 {
		t.Fatalf("DeployBundle crm = %v, %v", dep, err)
	}
	def, err := ac.ListAutomations(ctx, &latchkeyv1.ListAutomationsRequest{})
	if err != nil || def.GetBundleVersion() != 1 || def.GetSite() != "default" || !hasAPI(def, "list-invoices") || hasAPI(def, "crm-account") {
		t.Fatalf("the default site after deploying crm: %v, %v", def, err)
	}
	crmAPIs, err := ac.ListAutomations(ctx, &latchkeyv1.ListAutomationsRequest{Site: "crm"})
	if err != nil || !hasAPI(crmAPIs, "crm-account") || hasAPI(crmAPIs, "list-invoices") {
		t.Fatalf("crm's automations: %v, %v", crmAPIs, err)
	}
	sites, err := ac.ListSites(ctx, &latchkeyv1.ListSitesRequest{})
	if err != nil || len(sites.GetSites()) != 2 || sites.GetSites()[0].GetName() != "crm" || sites.GetSites()[1].GetName() != "default" {
		t.Fatalf("ListSites = %v, %v", sites, err)
	}

	billing := w.readySession(t)
	if billing.GetSite() != "default" {
		t.Fatalf("a session created without a site is on %q", billing.GetSite())
	}
	resp, err := w.sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{
		Site: "crm", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Credentials: alice(),
		Vars: map[string]string{"baseURL": crmURL},
	})
	if err != nil {
		t.Fatalf("CreateAuthSession on crm: %v", err)
	}
	if run := w.wait(t, resp.GetCreateRunId()); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED || run.GetSite() != "crm" {
		t.Fatalf("crm's login ended %s on site %q: %s", run.GetState(), run.GetSite(), run.GetFailureMessage())
	}
	crmSess := w.session(t, resp.GetAuthSession().GetId())
	if crmSess.GetSite() != "crm" || crmSess.GetState() != latchkeyv1.SessionState_SESSION_STATE_READY {
		t.Fatalf("crm session = %s on %q", crmSess.GetState(), crmSess.GetSite())
	}

	// Redeploying the default site leaves crm's version where it was.
	w.deploy(t)
	if got, err := ac.ListAutomations(ctx, &latchkeyv1.ListAutomationsRequest{Site: "crm"}); err != nil || got.GetBundleVersion() != 1 {
		t.Fatalf("crm after redeploying default: version %d, %v", got.GetBundleVersion(), err)
	}

	// Both sites log everyone out; each session logs in again once, at its own site.
	billingLogins, crmLogins := w.portal.Counters().Logins, crm.Counters().Logins
	w.portal.ExpireSessions()
	crm.ExpireSessions()
	a := w.start(t, "list-invoices", billing.GetId(), nil)
	b := w.start(t, "crm-account", crmSess.GetId(), nil)
	// (The default site's Run may still see version 1: the scheduler caches a head for
	// up to two seconds.)
	if a.GetSite() != "default" || b.GetSite() != "crm" || b.GetBundleVersion() != 1 {
		t.Errorf("runs execute default v%d (%q) and crm v%d (%q), want default and crm v1", a.GetBundleVersion(), a.GetSite(), b.GetBundleVersion(), b.GetSite())
	}
	for _, id := range []string{a.GetId(), b.GetId()} {
		if run := w.wait(t, id); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			t.Fatalf("run %s (%s) = %s %s: %s", id, run.GetApi(), run.GetState(), run.GetFailureReason(), run.GetFailureMessage())
		}
	}
	if got := w.wait(t, b.GetId()).GetOutput().GetStructValue().GetFields()["account"].GetStringValue(); got == "" {
		t.Errorf("crm-account extracted no account name")
	}
	if n := w.portal.Counters().Logins; n != billingLogins+1 {
		t.Errorf("logins at the billing portal = %d, want %d", n, billingLogins+1)
	}
	if n := crm.Counters().Logins; n != crmLogins+1 {
		t.Errorf("logins at the crm portal = %d, want %d", n, crmLogins+1)
	}

	// Runs and Jobs name APIs as before: the session's site decides which bundle.
	_, err = w.runs.StartRun(ctx, &latchkeyv1.StartRunRequest{Api: "crm-account", AuthSessionId: billing.GetId(), Params: &structpb.Struct{}})
	wantStatus(t, err, codes.NotFound, `no API named "crm-account"`)
	_, err = w.runs.StartRun(ctx, &latchkeyv1.StartRunRequest{Api: "crm-account", AuthSessionId: crmSess.GetId(), Site: "default"})
	wantStatus(t, err, codes.InvalidArgument, `belongs to site "crm"`)
	jc := latchkeyv1.NewJobServiceClient(w.conn)
	if _, err := jc.CreateJob(ctx, &latchkeyv1.CreateJobRequest{Paused: true, Job: &latchkeyv1.Job{
		Api: "crm-account", AuthSessionId: crmSess.GetId(), Schedule: every(time.Hour),
	}}); err != nil {
		t.Fatalf("a Job on the crm session: %v", err)
	}
	_, err = jc.CreateJob(ctx, &latchkeyv1.CreateJobRequest{Paused: true, Job: &latchkeyv1.Job{
		Api: "crm-account", AuthSessionId: billing.GetId(), Schedule: every(time.Hour),
	}})
	wantStatus(t, err, codes.NotFound, `site "default"`)

	// A session's site is fixed; a site needs a bundle before sessions; names are checked.
	_, err = w.sessions.UpdateAuthSession(ctx, &latchkeyv1.UpdateAuthSessionRequest{
		AuthSession: &latchkeyv1.AuthSession{Id: crmSess.GetId(), Site: "default"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"site"}},
	})
	wantStatus(t, err, codes.InvalidArgument, "fixed at creation")
	_, err = w.sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{Site: "hr", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Credentials: alice()})
	wantStatus(t, err, codes.FailedPrecondition, "-site hr")
	_, err = w.sessions.CreateAuthSession(ctx, &latchkeyv1.CreateAuthSessionRequest{Site: "HR.eu", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, Credentials: alice()})
	wantStatus(t, err, codes.InvalidArgument, "lower-case")
	_, err = ac.DeployBundle(ctx, &latchkeyv1.DeployBundleRequest{Site: "crm*", Files: crmBundle(t)})
	wantStatus(t, err, codes.InvalidArgument, "lower-case")
	// crm has a session now: a bundle without its login is refused there, not elsewhere.
	ping := []*latchkeyv1.BundleFile{{Path: "x.yaml", Content: []byte("apis:\n  ping:\n    steps:\n      - goto: http://127.0.0.1:1\n")}}
	_, err = ac.DeployBundle(ctx, &latchkeyv1.DeployBundleRequest{Site: "crm", Files: ping})
	if err == nil || !strings.Contains(err.Error(), "auth-sessions/create") {
		t.Errorf("a bundle without auth APIs on a site with sessions: %v", err)
	}
	if _, err := ac.DeployBundle(ctx, &latchkeyv1.DeployBundleRequest{Site: "tools", Files: ping}); err != nil {
		t.Errorf("a site without sessions takes a bundle without auth APIs: %v", err)
	}
}

func hasAPI(r *latchkeyv1.ListAutomationsResponse, name string) bool {
	for _, a := range r.GetAutomations() {
		if a.GetName() == name {
			return true
		}
	}
	return false
}
