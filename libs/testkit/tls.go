package testkit

import (
	"testing"

	"github.com/latchkey/latchkey/libs/server"
)

// CA is a throwaway certificate authority for tests of TLS, made by NewCA: the one
// `latchkey dev -dev-tls` makes (server.GenerateDevPKI), in the test's temporary
// directory.
type CA struct {
	// CertFile is the CA's certificate (PEM), for a peer to trust.
	CertFile string

	pki server.DevPKI
}

// NewCA makes a CA.
func NewCA(t testing.TB) *CA {
	t.Helper()
	p, err := server.GenerateDevPKI(t.TempDir())
	if err != nil {
		t.Fatalf("testkit: making a CA: %v", err)
	}
	return &CA{CertFile: p.CA(), pki: p}
}

// Issue makes a certificate signed by ca for name (its common name), good for servers
// and clients on 127.0.0.1, ::1 and localhost, and returns the paths of the
// certificate and key (PEM).
func (ca *CA) Issue(t testing.TB, name string) (certFile, keyFile string) {
	t.Helper()
	if _, err := server.GenerateDevPKI(ca.pki.Dir, name); err != nil {
		t.Fatalf("testkit: issuing a certificate for %s: %v", name, err)
	}
	return ca.pki.Cert(name), ca.pki.Key(name)
}
