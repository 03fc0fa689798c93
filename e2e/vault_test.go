package e2e

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
)

// TestVaultRefusesPublicCredentials: only Latchkey's services (the internal token)
// may call the vault; a project API key and the admin key are refused.
func TestVaultRefusesPublicCredentials(t *testing.T) {
	t.Parallel()
	st := stacktest.Start(t, stacktest.Options{})
	projectKey := projectAPIKey(t, st)
	cases := []struct {
		name  string
		token string
		code  codes.Code
	}{
		{"project API key", projectKey, codes.PermissionDenied},
		{"admin key", st.AdminKey, codes.PermissionDenied},
		{"no credentials", "", codes.Unauthenticated},
		{"internal token", st.InternalToken, codes.OK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := vaultv1.NewVaultServiceClient(st.Dial(t, tc.token))
			calls := map[string]func() error{
				"KeyStatus": func() error { _, err := c.KeyStatus(t.Context(), &vaultv1.KeyStatusRequest{}); return err },
				"Encrypt": func() error {
					_, err := c.Encrypt(t.Context(), &vaultv1.EncryptRequest{Context: &vaultv1.CryptoContext{ProjectId: "acme", Kind: "storage_state", Id: "s1"}, Plaintext: []byte("x")})
					return err
				},
				"ListAuditEvents": func() error {
					_, err := c.ListAuditEvents(t.Context(), &vaultv1.ListAuditEventsRequest{ProjectId: "acme"})
					return err
				},
			}
			for name, call := range calls {
				if err := call(); status.Code(err) != tc.code {
					t.Errorf("%s: %v, want %s", name, err, tc.code)
				}
			}
		})
	}
}

// projectAPIKey returns a real project API key when the registry can make one, and
// a well-formed one otherwise (the vault refuses both alike: it never looks keys up).
func projectAPIKey(t *testing.T, st *stacktest.Stack) string {
	t.Helper()
	r, err := latchkeyv1.NewProjectServiceClient(st.Dial(t, st.AdminKey)).CreateProject(t.Context(), &latchkeyv1.CreateProjectRequest{ProjectId: "vault-e2e", DisplayName: "vault e2e"})
	if err == nil && r.GetApiKeySecret() != "" {
		return r.GetApiKeySecret()
	}
	t.Logf("the registry made no project key (%v); using a well-formed one", err)
	return "lk_e2e_not_a_registered_key"
}
