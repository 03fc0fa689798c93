package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// DevPKI names the files of a local CA and the certificates it signed, as
// GenerateDevPKI writes them: for trying TLS and mTLS on one machine.
type DevPKI struct {
	Dir string
}

// CA is the CA certificate clients and services trust.
func (p DevPKI) CA() string { return filepath.Join(p.Dir, "ca.pem") }

// Cert and Key are the certificate of name ("latchkey" for the services'
// listeners, "client" for the CLI) and its key.
func (p DevPKI) Cert(name string) string { return filepath.Join(p.Dir, name+".pem") }
func (p DevPKI) Key(name string) string  { return filepath.Join(p.Dir, name+"-key.pem") }

// GenerateDevPKI creates, in dir, a CA valid for a year and, signed by it, one
// certificate per name: a server and client certificate for 127.0.0.1, ::1 and
// localhost whose common name is the name (a service's identity). Files that exist
// are kept. Keys are written 0600. Not for production: there, certificates come from
// the organisation's CA (docs/security.md).
func GenerateDevPKI(dir string, names ...string) (DevPKI, error) {
	p := DevPKI{Dir: dir}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return p, err
	}
	caCert, caKey, err := loadOrCreateCA(p)
	if err != nil {
		return p, err
	}
	for _, name := range names {
		if exists(p.Cert(name)) && exists(p.Key(name)) {
			continue
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return p, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(), Subject: pkix.Name{CommonName: name, Organization: []string{"Latchkey dev"}},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			DNSNames:    []string{"localhost", name},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return p, err
		}
		if err := writeKey(p.Key(name), key); err != nil {
			return p, err
		}
		if err := writePEM(p.Cert(name), "CERTIFICATE", der, 0o644); err != nil {
			return p, err
		}
	}
	return p, nil
}

func loadOrCreateCA(p DevPKI) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	keyFile := filepath.Join(p.Dir, "ca-key.pem")
	if exists(p.CA()) && exists(keyFile) {
		cb, err := readPEM(p.CA())
		if err != nil {
			return nil, nil, err
		}
		kb, err := readPEM(keyFile)
		if err != nil {
			return nil, nil, err
		}
		cert, err := x509.ParseCertificate(cb)
		if err != nil {
			return nil, nil, err
		}
		key, err := x509.ParseECPrivateKey(kb)
		return cert, key, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "Latchkey dev CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	if err := writeKey(keyFile, key); err != nil {
		return nil, nil, err
	}
	return cert, key, writePEM(p.CA(), "CERTIFICATE", der, 0o644)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func writeKey(path string, k *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der, 0o600)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

func readPEM(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s holds no PEM block", path)
	}
	return blk.Bytes, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}
