// Package testkit starts the real dependencies Latchkey's tests run against
// (STYLE.md rule 15): an embedded NATS JetStream server, a JetStream cluster of
// embedded servers (NATSCluster), a nats-server binary run as a process
// (StartNATSProcess), a private redis-server, the path of a Chromium, and a
// throwaway certificate authority (NewCA); and Eventually, to wait for a
// condition instead of sleeping. Every helper takes testing.TB, registers its
// own cleanup, and fails the test, never skips it, when a tool is missing: run
// scripts/install-deps.sh to install them. The demo portal is started by
// examples/portal/portaltest: a lib imports no example.
package testkit

// installHint tells a developer how to get a missing tool.
const installHint = "run scripts/install-deps.sh (as root or with sudo) to install the test dependencies"
