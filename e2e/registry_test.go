package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/storagestate"
	"github.com/latchkey/latchkey/libs/testkit"
)

// TestRegistryProjectsAndKeys covers ProjectService end to end: create (with the first
// key), get, list, keys created, listed and revoked, the audit trail, and delete with
// crypto-shredding through the vault.
func TestRegistryProjectsAndKeys(t *testing.T) {
	t.Parallel()
	r := startRegistry(t, stacktest.Options{})
	ctx := t.Context()
	acme := r.newProject(t, "acme")
	r.newProject(t, "zeta")

	got, err := acme.projects.GetProject(ctx, &latchkeyv1.GetProjectRequest{})
	if err != nil || got.GetProject().GetId() != "acme" || got.GetProject().GetDisplayName() != "Project acme" {
		t.Fatalf("GetProject = %v, %v", got, err)
	}
	list, err := r.admin.ListProjects(ctx, &latchkeyv1.ListProjectsRequest{PageSize: 1})
	if err != nil || len(list.GetProjects()) != 1 || list.GetPageInfo().GetNextPageToken() == "" {
		t.Fatalf("ListProjects page 1 = %v, %v", list, err)
	}
	list, err = r.admin.ListProjects(ctx, &latchkeyv1.ListProjectsRequest{PageSize: 1, PageToken: list.GetPageInfo().GetNextPageToken()})
	if err != nil || len(list.GetProjects()) != 1 || list.GetProjects()[0].GetId() != "zeta" {
		t.Fatalf("ListProjects page 2 = %v, %v", list, err)
	}

	k2, err := acme.projects.CreateApiKey(ctx, &latchkeyv1.CreateApiKeyRequest{Name: "ci"})
	if err != nil || !strings.HasPrefix(k2.GetApiKeySecret(), "lk_") {
		t.Fatalf("CreateApiKey = %v", err)
	}
	ci := r.clientFor(t, "acme", k2.GetApiKeySecret())
	keys, err := ci.projects.ListApiKeys(ctx, &latchkeyv1.ListApiKeysRequest{})
	if err != nil || len(keys.GetApiKeys()) != 2 {
		t.Fatalf("ListApiKeys = %v, %v", keys, err)
	}
	for _, k := range keys.GetApiKeys() {
		if strings.Contains(k.String(), k2.GetApiKeySecret()[12:]) {
			t.Fatal("ListApiKeys shows a key's secret")
		}
	}
	if _, err := acme.projects.RevokeApiKey(ctx, &latchkeyv1.RevokeApiKeyRequest{ApiKeyId: k2.GetApiKey().GetId()}); err != nil {
		t.Fatal(err)
	}
	_, err = ci.projects.GetProject(ctx, &latchkeyv1.GetProjectRequest{})
	regWantCode(t, err, codes.Unauthenticated)

	// Export is audited: it shows in the project's audit trail.
	acme.deployPortal(t)
	acme.createSession(t, &latchkeyv1.CreateAuthSessionRequest{AuthSessionId: "s1", Type: latchkeyv1.SessionType_SESSION_TYPE_RECORDER, Recorder: &latchkeyv1.RecorderSettings{StartUrl: "http://127.0.0.1:7490/login"}})
	if _, err := acme.sessions.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: "s1", StorageStateJson: []byte(regPlaywrightState)}); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.sessions.ExportStorageState(ctx, &latchkeyv1.ExportStorageStateRequest{AuthSessionId: "s1"}); err != nil {
		t.Fatal(err)
	}
	audit := regWaitForAudit(t, acme, "s1", "export")
	if audit.GetKind() != storagestate.CryptoKind || audit.GetProjectId() != "acme" {
		t.Errorf("audit entry %v", audit)
	}

	// Delete crypto-shreds: the state sealed for acme no longer opens, anywhere.
	sealed, err := r.internal.GetStorageState(ctx, &registryv1.GetStorageStateRequest{ProjectId: "acme", AuthSessionId: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.admin.DeleteProject(ctx, &latchkeyv1.DeleteProjectRequest{ProjectId: "acme"}); err != nil {
		t.Fatal(err)
	}
	_, err = r.vault.Decrypt(ctx, &vaultv1.DecryptRequest{Context: storagestate.CryptoContext("acme", "s1"), Ciphertext: sealed.GetCiphertext(), Reason: &vaultv1.AccessReason{Purpose: "test"}})
	if err == nil {
		t.Fatal("a state of a deleted project still decrypts")
	}
	_, err = acme.projects.GetProject(ctx, &latchkeyv1.GetProjectRequest{})
	regWantCode(t, err, codes.Unauthenticated)
	_, err = r.admin.GetProject(ctx, &latchkeyv1.GetProjectRequest{ProjectId: "acme"})
	regWantCode(t, err, codes.NotFound)
	_, err = r.admin.DeleteProject(ctx, &latchkeyv1.DeleteProjectRequest{ProjectId: "acme"})
	regWantCode(t, err, codes.NotFound)
}

// regWaitForAudit waits for the vault's audit entry of resource with purpose.
func regWaitForAudit(t *testing.T, c *regClient, resource, purpose string) *latchkeyv1.AuditEntry {
	t.Helper()
	var found *latchkeyv1.AuditEntry
	testkit.Eventually(t, 5*time.Second, func() (bool, string) {
		resp, err := c.projects.ListAuditEntries(t.Context(), &latchkeyv1.ListAuditEntriesRequest{ResourceId: resource})
		if err != nil {
			return false, err.Error()
		}
		for _, e := range resp.GetEntries() {
			if e.GetPurpose() == purpose {
				found = e
				return true, ""
			}
		}
		return false, fmt.Sprintf("no audit entry for %s with purpose %q: %v", resource, purpose, resp.GetEntries())
	})
	return found
}

// TestRegistryAutomations covers AutomationService: deploy, versions, get, list.
func TestRegistryAutomations(t *testing.T) {
	t.Parallel()
	r := startRegistry(t, stacktest.Options{})
	ctx := t.Context()
	c := r.newProject(t, "acme")
	empty, err := c.automations.ListAutomations(ctx, &latchkeyv1.ListAutomationsRequest{})
	if err != nil || len(empty.GetAutomations()) != 0 || empty.GetBundleVersion() != 0 {
		t.Fatalf("before any deploy: %v, %v", empty, err)
	}
	b1 := c.deployPortal(t)
	b2 := c.deployPortal(t)
	if b1.GetVersion() != 1 || b2.GetVersion() != 2 || b1.GetDigest() != b2.GetDigest() || b2.GetFiles() != nil {
		t.Fatalf("deploys: %v, %v", b1, b2)
	}
	got, err := c.automations.GetBundle(ctx, &latchkeyv1.GetBundleRequest{})
	if err != nil || got.GetBundle().GetVersion() != 2 || len(got.GetBundle().GetFiles()) != len(regPortalFiles(t)) {
		t.Fatalf("GetBundle = %v, %v", got, err)
	}
	internal, err := r.internal.GetBundle(ctx, &registryv1.GetBundleRequest{ProjectId: "acme", Version: 1})
	if err != nil || internal.GetBundle().GetDigest() != b1.GetDigest() || len(internal.GetBundle().GetFiles()) == 0 {
		t.Fatalf("internal GetBundle = %v, %v", internal, err)
	}
	bundles, err := c.automations.ListBundles(ctx, &latchkeyv1.ListBundlesRequest{})
	if err != nil || len(bundles.GetBundles()) != 2 || bundles.GetBundles()[0].GetVersion() != 2 {
		t.Fatalf("ListBundles = %v, %v", bundles, err)
	}
	autos, err := c.automations.ListAutomations(ctx, &latchkeyv1.ListAutomationsRequest{})
	if err != nil || autos.GetBundleVersion() != 2 || len(autos.GetAutomations()) < 3 {
		t.Fatalf("ListAutomations = %v, %v", autos, err)
	}
}

// TestRegistrySessionLifecycle covers AuthSessionService and the internal
// SessionStateService for each session type: create (secrets in the vault, the create
// Run started on the scheduler), get, list, update, the state machine, storage states,
// a credentials update and its completion, import/export, delete.
func TestRegistrySessionLifecycle(t *testing.T) {
	t.Parallel()
	r := startRegistry(t, stacktest.Options{})
	ctx := t.Context()
	c := r.newProject(t, "acme")
	c.deployPortal(t)

	cred := c.createSession(t, &latchkeyv1.CreateAuthSessionRequest{
		AuthSessionId: "alice", DisplayName: "Alice", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS,
		Credentials: map[string]string{"username": "alice", "password": "alice-pw"},
		Labels:      map[string]string{"team": "billing"}, Vars: map[string]string{"baseURL": "http://127.0.0.1:7490"},
		Proxy: &latchkeyv1.Proxy{Server: "http://127.0.0.1:3128", Username: "u", Password: "proxy-pw"},
	})
	if s := cred.GetAuthSession(); s.GetState() != latchkeyv1.SessionState_SESSION_STATE_PENDING || s.GetEtag() == 0 || s.GetProxy().GetPassword() != "" || cred.GetCreateRunId() == "" {
		t.Fatalf("created %v", cred)
	}
	runtime := c.createSession(t, &latchkeyv1.CreateAuthSessionRequest{Type: latchkeyv1.SessionType_SESSION_TYPE_RUNTIME, Credentials: map[string]string{"username": "bob", "password": "bob-pw"}})
	rec := c.createSession(t, &latchkeyv1.CreateAuthSessionRequest{AuthSessionId: "rec", Type: latchkeyv1.SessionType_SESSION_TYPE_RECORDER, Recorder: &latchkeyv1.RecorderSettings{StartUrl: "http://127.0.0.1:7490/login"}})
	if !strings.HasPrefix(runtime.GetAuthSession().GetId(), "s-") || rec.GetCreateRunId() != "" {
		t.Fatalf("runtime %v, recorder %v", runtime, rec)
	}

	// The scheduler was asked for one create Run per CREDENTIALS or RUNTIME session, for
	// the right project; only RUNTIME credentials travel with it.
	runs := r.sched.runs()
	if len(runs) != 2 {
		t.Fatalf("%d StartRun calls, want 2", len(runs))
	}
	for i, want := range []struct {
		session string
		creds   map[string]string
	}{{"alice", nil}, {runtime.GetAuthSession().GetId(), map[string]string{"username": "bob", "password": "bob-pw"}}} {
		got := runs[i]
		if got.req.GetKind() != latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE || got.req.GetApi() != "auth-sessions/create" ||
			got.req.GetAuthSessionId() != want.session || got.project != "acme" || got.caller != "latchkey-session-registry" ||
			got.req.GetIdempotencyKey() == "" || !cmp.Equal(got.req.GetCredentials(), want.creds, cmp.Comparer(func(a, b map[string]string) bool { return len(a) == len(b) && cmp.Equal(a, b) })) {
			t.Errorf("StartRun %d = %+v", i, got)
		}
	}
	secret, err := r.vault.GetSecret(ctx, &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: "session-alice", Reason: &vaultv1.AccessReason{Purpose: "test"}})
	if err != nil || secret.GetFields()["password"] != "alice-pw" {
		t.Fatalf("credentials in the vault: %v", err)
	}
	proxy, err := r.vault.GetSecret(ctx, &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: "proxy-alice", Reason: &vaultv1.AccessReason{Purpose: "test"}})
	if err != nil || proxy.GetFields()["password"] != "proxy-pw" {
		t.Fatalf("proxy password in the vault: %v", err)
	}
	_, err = r.vault.GetSecret(ctx, &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: "session-" + runtime.GetAuthSession().GetId(), Reason: &vaultv1.AccessReason{Purpose: "test"}})
	regWantCode(t, err, codes.NotFound)

	// Get, list with filters, update.
	got, err := c.sessions.GetAuthSession(ctx, &latchkeyv1.GetAuthSessionRequest{AuthSessionId: "alice"})
	if d := cmp.Diff(cred.GetAuthSession(), got.GetAuthSession(), protocmp.Transform()); err != nil || d != "" {
		t.Fatalf("GetAuthSession (-created +got):\n%s %v", d, err)
	}
	listed, err := c.sessions.ListAuthSessions(ctx, &latchkeyv1.ListAuthSessionsRequest{LabelSelector: &latchkeyv1.LabelSelector{MatchLabels: map[string]string{"team": "billing"}}})
	if err != nil || len(listed.GetAuthSessions()) != 1 || listed.GetAuthSessions()[0].GetId() != "alice" {
		t.Fatalf("ListAuthSessions by label = %v, %v", listed, err)
	}
	up, err := c.sessions.UpdateAuthSession(ctx, &latchkeyv1.UpdateAuthSessionRequest{
		AuthSession: &latchkeyv1.AuthSession{Id: "alice", DisplayName: "Alice B", Etag: got.GetAuthSession().GetEtag(), Type: latchkeyv1.SessionType_SESSION_TYPE_RUNTIME},
		UpdateMask:  &fieldmaskpb.FieldMask{Paths: []string{"display_name"}},
	})
	if err != nil || up.GetAuthSession().GetDisplayName() != "Alice B" || up.GetAuthSession().GetType() != latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS {
		t.Fatalf("UpdateAuthSession = %v, %v", up, err)
	}
	_, err = c.sessions.UpdateAuthSession(ctx, &latchkeyv1.UpdateAuthSessionRequest{
		AuthSession: &latchkeyv1.AuthSession{Id: "alice", DisplayName: "stale", Etag: got.GetAuthSession().GetEtag()},
		UpdateMask:  &fieldmaskpb.FieldMask{Paths: []string{"display_name"}},
	})
	regWantCode(t, err, codes.Aborted)

	// The scheduler's part: the create Run stores a state and makes the session READY.
	ct, err := r.vault.Encrypt(ctx, &vaultv1.EncryptRequest{Context: storagestate.CryptoContext("acme", "alice"), Plaintext: regMustMarshal(t, regPlaywrightState)})
	if err != nil {
		t.Fatal(err)
	}
	put, err := r.internal.PutStorageState(ctx, &registryv1.PutStorageStateRequest{ProjectId: "acme", AuthSessionId: "alice", Ciphertext: ct.GetCiphertext(), KnownGood: true})
	if err != nil || put.GetRevision() != 1 {
		t.Fatalf("PutStorageState = %v, %v", put, err)
	}
	cur, err := r.internal.GetSession(ctx, &registryv1.GetSessionRequest{ProjectId: "acme", AuthSessionId: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	next := timestamppb.New(time.Now().Add(-time.Second))
	tr, err := r.internal.TransitionSession(ctx, &registryv1.TransitionSessionRequest{
		ProjectId: "acme", AuthSessionId: "alice", ExpectedEtag: cur.GetAuthSession().GetEtag(),
		ToState: latchkeyv1.SessionState_SESSION_STATE_READY, StateRevision: 1, RunId: cred.GetCreateRunId(), NextRefreshTime: next,
	})
	if err != nil || tr.GetAuthSession().GetState() != latchkeyv1.SessionState_SESSION_STATE_READY {
		t.Fatalf("TransitionSession = %v, %v", tr, err)
	}
	due, err := r.internal.ListSessionsDueForRefresh(ctx, &registryv1.ListSessionsDueForRefreshRequest{})
	if err != nil || len(due.GetAuthSessions()) != 1 || due.GetAuthSessions()[0].GetId() != "alice" {
		t.Fatalf("ListSessionsDueForRefresh = %v, %v", due, err)
	}
	sealed, err := r.internal.GetStorageState(ctx, &registryv1.GetStorageStateRequest{ProjectId: "acme", AuthSessionId: "alice"})
	if err != nil || sealed.GetRevision() != 1 || string(sealed.GetCiphertext()) != string(ct.GetCiphertext()) {
		t.Fatalf("GetStorageState = %v", err)
	}

	// Export round-trips the Playwright JSON.
	exp, err := c.sessions.ExportStorageState(ctx, &latchkeyv1.ExportStorageStateRequest{AuthSessionId: "alice"})
	if err != nil || exp.GetRevision() != 1 {
		t.Fatalf("ExportStorageState = %v", err)
	}
	want, _ := storagestate.FromPlaywright([]byte(regPlaywrightState))
	back, err := storagestate.FromPlaywright(exp.GetStorageStateJson())
	if d := cmp.Diff(want, back, protocmp.Transform()); err != nil || d != "" {
		t.Fatalf("export (-imported +exported):\n%s %v", d, err)
	}

	regCheckCredentialsUpdate(t, r, c)

	if _, err := c.sessions.DeleteAuthSession(ctx, &latchkeyv1.DeleteAuthSessionRequest{AuthSessionId: "alice"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.sessions.GetAuthSession(ctx, &latchkeyv1.GetAuthSessionRequest{AuthSessionId: "alice"})
	regWantCode(t, err, codes.NotFound)
	for _, s := range []string{"session-alice", "proxy-alice"} {
		_, err = r.vault.GetSecret(ctx, &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: s, Reason: &vaultv1.AccessReason{Purpose: "test"}})
		regWantCode(t, err, codes.NotFound)
	}
}

// regCheckCredentialsUpdate: new credentials wait as pending while the AUTHSESSION_UPDATE
// Run runs, a second update is refused meanwhile, a failed Run discards them and a
// successful one promotes them.
func regCheckCredentialsUpdate(t *testing.T, r *registryStack, c *regClient) {
	ctx := t.Context()
	secret := func(id string) map[string]string {
		s, err := r.vault.GetSecret(ctx, &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: id, Reason: &vaultv1.AccessReason{Purpose: "test"}})
		if err != nil {
			return nil
		}
		return s.GetFields()
	}
	for i, succeed := range []bool{false, true} {
		pw := []string{"wrong-pw", "new-pw"}[i]
		upd, err := c.sessions.UpdateAuthSessionCredentials(ctx, &latchkeyv1.UpdateAuthSessionCredentialsRequest{AuthSessionId: "alice", Credentials: map[string]string{"username": "alice", "password": pw}})
		if err != nil {
			t.Fatal(err)
		}
		runs := r.sched.runs()
		if last := runs[len(runs)-1]; last.id != upd.GetUpdateRunId() || last.req.GetKind() != latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE || len(last.req.GetCredentials()) != 0 {
			t.Fatalf("update Run %+v", last)
		}
		if secret("session-alice")["password"] != "alice-pw" || secret("session-alice-pending")["password"] != pw {
			t.Fatal("pending credentials replaced the old ones before the Run ended")
		}
		_, err = c.sessions.UpdateAuthSessionCredentials(ctx, &latchkeyv1.UpdateAuthSessionCredentialsRequest{AuthSessionId: "alice", Credentials: map[string]string{"password": "x"}})
		regWantCode(t, err, codes.FailedPrecondition)
		_, err = r.internal.CompleteCredentialsUpdate(ctx, &registryv1.CompleteCredentialsUpdateRequest{ProjectId: "acme", AuthSessionId: "alice", RunId: "run-other", Succeeded: true})
		regWantCode(t, err, codes.FailedPrecondition)
		for range 2 { // a repeated completion changes nothing
			if _, err := r.internal.CompleteCredentialsUpdate(ctx, &registryv1.CompleteCredentialsUpdateRequest{ProjectId: "acme", AuthSessionId: "alice", RunId: upd.GetUpdateRunId(), Succeeded: succeed}); err != nil {
				t.Fatal(err)
			}
		}
		want := map[bool]string{false: "alice-pw", true: "new-pw"}[succeed]
		if got := secret("session-alice")["password"]; got != want || secret("session-alice-pending") != nil {
			t.Fatalf("after a Run that succeeded=%v the password is %q and pending is %v", succeed, got, secret("session-alice-pending") != nil)
		}
	}
}

func regMustMarshal(t *testing.T, playwright string) []byte {
	t.Helper()
	st, err := storagestate.FromPlaywright([]byte(playwright))
	if err != nil {
		t.Fatal(err)
	}
	b, err := storagestate.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCanLoginUnattended: an operator sees which sessions will need a person when they
// expire. The portal's create recipe asks only when the portal wants an emailed code
// (ask with when): its CREDENTIALS sessions log in unattended, a RECORDER session does
// not; once a create recipe that asks at every login is deployed, none does.
func TestCanLoginUnattended(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	creds := w.readySession(t)
	rec := w.recorderSession(t)
	if !creds.GetCanLoginUnattended() {
		t.Error("a CREDENTIALS session of the portal's recipes says it cannot log in unattended")
	}
	if got := w.session(t, rec.GetId()); got.GetCanLoginUnattended() {
		t.Error("a RECORDER session says it can log in unattended")
	}

	always := []byte(`apis:
  auth-sessions/create:
    steps:
      - goto: "{{ .Vars.baseURL }}/login"
      - ask: { field: one_time_code, prompt: "The code from your phone" }
      - fill: { selector: "#username", value: "{{ .Vars.one_time_code }}" }
  auth-sessions/check:
    steps:
      - request: { url: "{{ .Vars.baseURL }}/api/me" }
`)
	if _, err := latchkeyv1.NewAutomationServiceClient(w.conn).DeployBundle(t.Context(), &latchkeyv1.DeployBundleRequest{
		Files: []*latchkeyv1.BundleFile{{Path: "auth-sessions.yaml", Content: always}},
	}); err != nil {
		t.Fatalf("DeployBundle: %v", err)
	}
	list, err := w.sessions.ListAuthSessions(t.Context(), &latchkeyv1.ListAuthSessionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list.GetAuthSessions() {
		if s.GetCanLoginUnattended() {
			t.Errorf("session %s (%s) says it can log in unattended with a create recipe that always asks", s.GetId(), s.GetType())
		}
	}
}
