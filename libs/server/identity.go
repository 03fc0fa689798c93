package server

import (
	"context"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Internal RPCs each Latchkey service calls, by the name its certificate carries (its
// common name): a service presenting its certificate (mTLS) may call these internal
// methods and no other, whatever token it holds — a runner's certificate cannot store
// or delete secrets, rotate the vault's keys, or move a session's state machine.
// Callers without a certificate of one of these names (operators' tools, `latchkey
// dev`'s one certificate) are held to the internal token alone.
var servicePermissions = map[string][]string{
	"registry": {
		"/latchkey.vault.v1.VaultService/PutSecret", "/latchkey.vault.v1.VaultService/GetSecret",
		"/latchkey.vault.v1.VaultService/DeleteSecret", "/latchkey.vault.v1.VaultService/Encrypt",
		"/latchkey.vault.v1.VaultService/Decrypt", "/latchkey.vault.v1.VaultService/ListAuditEvents",
		"/latchkey.vault.v1.VaultService/ShredProject",
	},
	"scheduler": {
		"/latchkey.vault.v1.VaultService/Encrypt",
		"/latchkey.registry.v1.SessionStateService/GetSession", "/latchkey.registry.v1.SessionStateService/TransitionSession",
		"/latchkey.registry.v1.SessionStateService/PutStorageState", "/latchkey.registry.v1.SessionStateService/GetBundle",
		"/latchkey.registry.v1.SessionStateService/ListSessionsDueForRefresh",
		"/latchkey.registry.v1.SessionStateService/CompleteCredentialsUpdate",
		"/latchkey.registry.v1.SessionStateService/AuthenticateApiKey",
	},
	"runner": {
		"/latchkey.vault.v1.VaultService/Encrypt", "/latchkey.vault.v1.VaultService/Decrypt",
		"/latchkey.vault.v1.VaultService/GetSecret",
		"/latchkey.registry.v1.SessionStateService/GetSession", "/latchkey.registry.v1.SessionStateService/GetStorageState",
		"/latchkey.registry.v1.SessionStateService/PutStorageState", "/latchkey.registry.v1.SessionStateService/GetBundle",
		"/latchkey.registry.v1.SessionStateService/AuthenticateApiKey",
	},
	"vault": {
		"/latchkey.registry.v1.SessionStateService/AuthenticateApiKey",
	},
}

// PeerService is the Latchkey service whose verified client certificate the caller
// presented (its common name), or "" when it presented none or another name.
func PeerService(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return ""
	}
	name := strings.TrimPrefix(info.State.VerifiedChains[0][0].Subject.CommonName, "latchkey-")
	if _, known := servicePermissions[name]; !known {
		return ""
	}
	return name
}

// checkServiceCert refuses an internal call from a service certificate that may not
// make it.
func checkServiceCert(ctx context.Context, method string) error {
	svc := PeerService(ctx)
	if svc == "" {
		return nil
	}
	for _, m := range servicePermissions[svc] {
		if m == method {
			return nil
		}
	}
	return status.Errorf(codes.PermissionDenied, "the %s service's certificate may not call %s", svc, method)
}
