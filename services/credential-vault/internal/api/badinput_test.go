package api_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/services/credential-vault/internal/api"
)

// TestBadInputGetsAClearStatus sends every kind of bad request: each gets the right
// code and a message naming what to fix, never a panic or an Internal error.
func TestBadInputGetsAClearStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := caller(t.Context(), "test")
	good := cctx("acme", "storage_state", "s1")
	ct := e.encrypt(t, good, []byte("state")).GetCiphertext()
	e.put(t, "acme", "login", map[string]string{"password": "pw"})
	long := func(n int) string { return strings.Repeat("a", n) }
	unknownVersion := append([]byte(nil), ct...)
	unknownVersion[7] = 9
	garbage := []byte(strings.Repeat("not a ciphertext at all, just text. ", 4))
	badFormat := append([]byte(nil), ct...)
	badFormat[3] = 7

	cases := []struct {
		name string
		call func() error
		code codes.Code
		want string
	}{
		{"put: empty project", putReq(&vaultv1.PutSecretRequest{SecretId: "s", Fields: pw()}, e), codes.InvalidArgument, "project_id is empty"},
		{"put: empty secret id", putReq(&vaultv1.PutSecretRequest{ProjectId: "acme", Fields: pw()}, e), codes.InvalidArgument, "secret_id is empty"},
		{"put: uppercase secret id", putReq(&vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: "Login", Fields: pw()}, e), codes.InvalidArgument, "lowercase"},
		{"put: dot in project", putReq(&vaultv1.PutSecretRequest{ProjectId: "a.b", SecretId: "s", Fields: pw()}, e), codes.InvalidArgument, "project_id \"a.b\" is invalid"},
		{"put: wildcard id", putReq(&vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: ">", Fields: pw()}, e), codes.InvalidArgument, "secret_id"},
		{"put: long id", putReq(&vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: long(api.MaxSecretIDLen + 1), Fields: pw()}, e), codes.InvalidArgument, "at most 128"},
		{"put: no fields", putReq(&vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: "s"}, e), codes.InvalidArgument, "at least one field"},
		{"put: too many fields", putReq(&vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: "s", Fields: manyFields(api.MaxFields + 1)}, e), codes.InvalidArgument, "at most 32"},
		{"put: oversized value", putReq(&vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: "s", Fields: map[string]string{"cert": long(api.MaxFieldValueBytes + 1)}}, e), codes.InvalidArgument, "field \"cert\" is 16385 bytes"},
		{"put: oversized secret", putReq(&vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: "s", Fields: map[string]string{"a": long(api.MaxFieldValueBytes), "b": long(api.MaxFieldValueBytes), "c": long(api.MaxFieldValueBytes), "d": long(api.MaxFieldValueBytes)}}, e), codes.InvalidArgument, "add up to"},
		{"put: bad field name", putReq(&vaultv1.PutSecretRequest{ProjectId: "acme", SecretId: "s", Fields: map[string]string{"pass word": "x"}}, e), codes.InvalidArgument, "field name"},
		{"get: empty ids", func() error { _, err := e.GetSecret(ctx, &vaultv1.GetSecretRequest{}); return err }, codes.InvalidArgument, "project_id is empty"},
		{"get: missing", func() error {
			_, err := e.GetSecret(ctx, &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: "nope"})
			return err
		}, codes.NotFound, `secret "nope" in project "acme": not found`},
		{"get: long purpose", func() error {
			_, err := e.GetSecret(ctx, &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: "login", Reason: &vaultv1.AccessReason{Purpose: long(api.MaxPurposeLen + 1)}})
			return err
		}, codes.InvalidArgument, "reason.purpose"},
		{"delete: empty", func() error {
			_, err := e.DeleteSecret(ctx, &vaultv1.DeleteSecretRequest{ProjectId: "acme"})
			return err
		}, codes.InvalidArgument, "secret_id is empty"},
		{"encrypt: no context", encReq(nil, []byte("x"), e), codes.InvalidArgument, "context is missing"},
		{"encrypt: empty kind", encReq(cctx("acme", "", "s"), []byte("x"), e), codes.InvalidArgument, "context.kind is empty"},
		{"encrypt: empty id", encReq(cctx("acme", "storage_state", ""), []byte("x"), e), codes.InvalidArgument, "context.id is empty"},
		{"encrypt: reserved kind", encReq(cctx("acme", "secret", "login"), []byte("x"), e), codes.InvalidArgument, "reserved"},
		{"encrypt: oversized", encReq(good, make([]byte, api.MaxPlaintextBytes+1), e), codes.InvalidArgument, "plaintext is 3145729 bytes, at most 3145728"},
		{"decrypt: empty ciphertext", decReq(good, nil, e), codes.InvalidArgument, "ciphertext is empty"},
		{"decrypt: garbage", decReq(good, garbage, e), codes.InvalidArgument, "not a Latchkey vault ciphertext"},
		{"decrypt: short", decReq(good, ct[:20], e), codes.InvalidArgument, "not a Latchkey vault ciphertext"},
		{"decrypt: oversized", decReq(good, make([]byte, api.MaxCiphertextBytes+1), e), codes.InvalidArgument, "at most"},
		{"decrypt: unknown format", decReq(good, badFormat, e), codes.InvalidArgument, "format 7"},
		{"decrypt: unknown key version", decReq(good, unknownVersion, e), codes.FailedPrecondition, "names version 9,"},
		{"rewrap: context without ciphertext", func() error {
			_, err := e.Rewrap(ctx, &vaultv1.RewrapRequest{Context: good})
			return err
		}, codes.InvalidArgument, "ciphertext is empty"},
		{"rewrap: garbage", func() error {
			_, err := e.Rewrap(ctx, &vaultv1.RewrapRequest{Context: good, Ciphertext: garbage})
			return err
		}, codes.InvalidArgument, "not a Latchkey vault ciphertext"},
		{"min version 0", minReq(0, e), codes.InvalidArgument, "between 1 and the current version 1"},
		{"min version above current", minReq(5, e), codes.InvalidArgument, "between 1 and the current version 1"},
		{"shred: empty project", func() error { _, err := e.ShredProject(ctx, &vaultv1.ShredProjectRequest{}); return err }, codes.InvalidArgument, "project_id is empty"},
		{"audit: negative page size", auditReq(&vaultv1.ListAuditEventsRequest{ProjectId: "acme", PageSize: -1}, e), codes.InvalidArgument, "page_size"},
		{"audit: bad token", auditReq(&vaultv1.ListAuditEventsRequest{ProjectId: "acme", PageToken: "garbage"}, e), codes.InvalidArgument, "page_token"},
		{"audit: empty project", auditReq(&vaultv1.ListAuditEventsRequest{}, e), codes.InvalidArgument, "project_id is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.call()
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Fatalf("got %v; want %s with %q", err, tc.code, tc.want)
			}
		})
	}
}

func pw() map[string]string { return map[string]string{"password": "pw"} }

func putReq(r *vaultv1.PutSecretRequest, e *env) func() error {
	return func() error { _, err := e.PutSecret(context.Background(), r); return err }
}

func encReq(c *vaultv1.CryptoContext, pt []byte, e *env) func() error {
	return func() error {
		_, err := e.Encrypt(context.Background(), &vaultv1.EncryptRequest{Context: c, Plaintext: pt})
		return err
	}
}

func decReq(c *vaultv1.CryptoContext, ct []byte, e *env) func() error {
	return func() error {
		_, err := e.Decrypt(context.Background(), &vaultv1.DecryptRequest{Context: c, Ciphertext: ct})
		return err
	}
}

func minReq(v uint32, e *env) func() error {
	return func() error {
		_, err := e.SetMinDecryptionVersion(context.Background(), &vaultv1.SetMinDecryptionVersionRequest{MinDecryptionVersion: v})
		return err
	}
}

func auditReq(r *vaultv1.ListAuditEventsRequest, e *env) func() error {
	return func() error { _, err := e.ListAuditEvents(context.Background(), r); return err }
}
