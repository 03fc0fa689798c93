// Package domain holds the names and small facts that more than one service must
// agree on and that no .proto file can carry: the ids of the secrets the registry
// keeps in the vault, the crypto kinds that bind a ciphertext to its use, and which
// Run states are final. Subjects and buckets live in libs/bus.
package domain

import (
	"fmt"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// Crypto kinds: the vault seals every ciphertext for (project, kind, id), so one made
// for one use never opens for another.
const (
	// KindSecret is a secret stored in the vault (a session's credentials).
	KindSecret = "secret"
	// KindStorageState is a session's browser state, id the session.
	KindStorageState = "storage_state"
	// KindRuntimeCredentials are the credentials a Run passed for a RUNTIME session,
	// id the Run that passed them.
	KindRuntimeCredentials = "runtime_credentials"
	// KindResumeAnswers are a caller's answers to a Run that asked for more
	// information, id the Run.
	KindResumeAnswers = "resume_answers"
)

// CredentialsSecret is the vault secret holding a CREDENTIALS session's credentials.
func CredentialsSecret(sessionID string) string { return "session-" + sessionID }

// PendingCredentialsSecret holds a CREDENTIALS session's new credentials while the
// AUTHSESSION_UPDATE Run that tries them runs.
func PendingCredentialsSecret(sessionID string) string {
	return CredentialsSecret(sessionID) + "-pending"
}

// ProxySecret is the vault secret holding the credentials of a session's proxy; the
// runner reads it when it opens a context for the session.
func ProxySecret(sessionID string) string { return "proxy-" + sessionID }

// RunEnded reports whether a Run state is final: SUCCEEDED, FAILED or CANCELED.
func RunEnded(s latchkeyv1.RunState) bool {
	switch s {
	case latchkeyv1.RunState_RUN_STATE_SUCCEEDED, latchkeyv1.RunState_RUN_STATE_FAILED, latchkeyv1.RunState_RUN_STATE_CANCELED:
		return true
	}
	return false
}

// DefaultSite is the site of a bundle deployed, a session created or a Run started
// without naming one: where every project's one bundle lived before sites existed.
const DefaultSite = "default"

// Site returns name, or DefaultSite for the empty name.
func Site(name string) string {
	if name == "" {
		return DefaultSite
	}
	return name
}

// SiteOf names a site of a project in a message: `project "acme"` for the default
// site, `site "crm" of project "acme"` for another; "this project" stands for the
// project when it is "".
func SiteOf(project, site string) string {
	of := "this project"
	if project != "" {
		of = fmt.Sprintf("project %q", project)
	}
	if Site(site) == DefaultSite {
		return of
	}
	return fmt.Sprintf("site %q of %s", site, of)
}

// DeployCommand is the CLI command that deploys a bundle to site.
func DeployCommand(site string) string {
	if Site(site) == DefaultSite {
		return "latchkey automations deploy DIR"
	}
	return "latchkey automations deploy -site " + site + " DIR"
}

// CheckSite reports whether name can name a site: empty (the default), or lower-case
// letters, digits and '-', at most 63 characters, not starting or ending with '-'
// (a DNS label, so it is also a NATS KV key token).
func CheckSite(name string) error {
	if name == "" {
		return nil
	}
	if len(name) > 63 {
		return fmt.Errorf("site %.80q is longer than 63 characters", name)
	}
	for i, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(name)-1
		if !ok {
			return fmt.Errorf("site %.80q may hold only lower-case letters, digits and '-' (not first or last)", name)
		}
	}
	return nil
}
