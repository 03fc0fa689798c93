package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// TLSFiles name the PEM files of a service's TLS set-up.
type TLSFiles struct {
	// Cert and Key are the listener's certificate (chain) and key; both empty: no TLS.
	Cert, Key string
	// CA holds the CAs that sign the peers' certificates: the services' listeners, as
	// clients check them, and client certificates, as listeners check them (mTLS).
	CA string
}

// Enabled reports whether a certificate is configured.
func (f TLSFiles) Enabled() bool { return f.Cert != "" || f.Key != "" }

// reloadInterval bounds how often a certificate's files are looked at for a change.
var reloadInterval = 10 * time.Second

// certSource serves a certificate from its files and reloads it when they change, so
// a rotated certificate is taken up without a restart (cert-manager, a renewal job).
type certSource struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	mtime   time.Time
	checked time.Time
}

func newCertSource(certFile, keyFile string) (*certSource, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("TLS needs both a certificate and its key (-tls-cert and -tls-key)")
	}
	s := &certSource{certFile: certFile, keyFile: keyFile}
	if _, err := s.get(); err != nil {
		return nil, err
	}
	return s, nil
}

// get returns the current certificate, reloading it when a file changed; a file that
// does not load keeps the last good certificate.
func (s *certSource) get() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.cert != nil && now.Sub(s.checked) < reloadInterval {
		return s.cert, nil
	}
	s.checked = now
	mt := latest(s.certFile, s.keyFile)
	if s.cert != nil && !mt.After(s.mtime) {
		return s.cert, nil
	}
	c, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		if s.cert != nil {
			return s.cert, nil
		}
		return nil, fmt.Errorf("loading the TLS certificate %s and key %s: %w", s.certFile, s.keyFile, err)
	}
	s.cert, s.mtime = &c, mt
	return s.cert, nil
}

func latest(files ...string) time.Time {
	var t time.Time
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.ModTime().After(t) {
			t = fi.ModTime()
		}
	}
	return t
}

// LoadCAPool reads a PEM file of CA certificates.
func LoadCAPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("the CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// ServerTLSConfig is the listeners' TLS: TLS 1.2 at least, the certificate reloaded
// when its files change, and, with a CA, client certificates verified when presented
// (services present theirs: mTLS; API clients may present none and use their key).
func ServerTLSConfig(f TLSFiles) (*tls.Config, error) {
	src, err := newCertSource(f.Cert, f.Key)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return src.get() },
		NextProtos:     []string{"h2", "http/1.1"},
	}
	if f.CA != "" {
		if cfg.ClientCAs, err = LoadCAPool(f.CA); err != nil {
			return nil, err
		}
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

// ClientTLSConfig is how a client dials a TLS listener: the servers' CA (empty: the
// system's roots), and a client certificate for mTLS (both files, or none).
func ClientTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := LoadCAPool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		src, err := newCertSource(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return src.get() }
	}
	return cfg, nil
}
