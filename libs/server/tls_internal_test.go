package server

import (
	"crypto/tls"
	"os"
	"testing"
	"time"
)

// TestListenerCertificateReloads: a renewed certificate written over the files is
// served from the next handshake after the check interval, with no restart; a file
// that does not load keeps the last good certificate.
func TestListenerCertificateReloads(t *testing.T) {
	old := reloadInterval
	reloadInterval = 0
	defer func() { reloadInterval = old }()

	pki, err := GenerateDevPKI(t.TempDir(), "first", "second")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := dir+"/tls.crt", dir+"/tls.key"
	install := func(name string, at time.Time) {
		t.Helper()
		for src, dst := range map[string]string{pki.Cert(name): certFile, pki.Key(name): keyFile} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(dst, at, at); err != nil {
				t.Fatal(err)
			}
		}
	}
	now := time.Now()
	install("first", now.Add(-time.Hour))
	cfg, err := ServerTLSConfig(TLSFiles{Cert: certFile, Key: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	if got := commonName(t, cfg); got != "first" {
		t.Fatalf("serves %q, want first", got)
	}
	install("second", now)
	if got := commonName(t, cfg); got != "second" {
		t.Fatalf("after the renewal the listener serves %q, want second", got)
	}
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.Chtimes(certFile, now.Add(time.Hour), now.Add(time.Hour))
	if got := commonName(t, cfg); got != "second" {
		t.Fatalf("with a broken file the listener serves %q, want the last good one (second)", got)
	}
	if _, err := ServerTLSConfig(TLSFiles{Cert: certFile, Key: keyFile}); err == nil {
		t.Error("a listener starting on a broken certificate file started")
	}
}

func commonName(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	c, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Leaf == nil {
		t.Fatal("the certificate has no parsed leaf")
	}
	return c.Leaf.Subject.CommonName
}
