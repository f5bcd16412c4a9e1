package testserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// ServerTLS names the PEM files a server uses for TLS. Build one with
// CA.ServerTLS, or fill it from CA.Issue.
type ServerTLS struct {
	// CAFile is the CA that client certificates must chain to.
	CAFile string
	// CertFile and KeyFile are the server's certificate and private key.
	CertFile string
	KeyFile  string
	// RequireClientCert makes the server demand a client certificate
	// signed by CAFile (Mosquitto require_certificate, nats-server
	// verify).
	RequireClientCert bool
}

// certValidity is how long issued certificates are valid, from an hour ago
// to absorb clock skew.
const certValidity = 24 * time.Hour

// CA is a throw-away ECDSA P-256 certificate authority held in memory. Its
// methods are safe for concurrent use.
type CA struct {
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	certFile string
	pool     *x509.CertPool
}

// NewCA generates a self-signed CA and writes its certificate (PEM) into a
// new t.TempDir. It fails the test on any error.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testserver: CA key: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "nr-bridge test CA", Organization: []string{"nr-bridge tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testserver: CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testserver: parse CA certificate: %v", err)
	}
	ca := &CA{cert: cert, key: key, pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	ca.certFile = filepath.Join(t.TempDir(), "ca.crt")
	writePEM(t, ca.certFile, "CERTIFICATE", der)
	return ca
}

// CertFile returns the path of the CA certificate (PEM), for cafile-style
// settings of servers and clients.
func (ca *CA) CertFile() string { return ca.certFile }

// Pool returns a pool holding only the CA certificate, for
// tls.Config.RootCAs or ClientCAs. Callers must not modify it.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// Issue signs a certificate for commonName and writes it and its private key
// (PKCS #8) as PEM files into a new t.TempDir, returning their paths. A
// client certificate gets extended key usage clientAuth; a server
// certificate gets serverAuth and always covers localhost, 127.0.0.1 and ::1
// in addition to dnsNames and ips. It fails the test on any error.
func (ca *CA) Issue(t testing.TB, commonName string, dnsNames []string, ips []net.IP, client bool) (certPEMPath, keyPEMPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testserver: key for %q: %v", commonName, err)
	}
	dnsNames = slices.Clone(dnsNames)
	ips = slices.Clone(ips)
	usage := x509.ExtKeyUsageClientAuth
	if !client {
		usage = x509.ExtKeyUsageServerAuth
		if !slices.Contains(dnsNames, "localhost") {
			dnsNames = append(dnsNames, "localhost")
		}
		for _, ip := range []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback} {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
		}
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"nr-bridge tests"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testserver: certificate for %q: %v", commonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testserver: marshal key for %q: %v", commonName, err)
	}
	dir := t.TempDir()
	base := fileSafe(commonName)
	certPEMPath = filepath.Join(dir, base+".crt")
	keyPEMPath = filepath.Join(dir, base+".key")
	writePEM(t, certPEMPath, "CERTIFICATE", der)
	writePEM(t, keyPEMPath, "PRIVATE KEY", keyDER)
	return certPEMPath, keyPEMPath
}

// ServerTLS issues a server certificate for localhost and 127.0.0.1 and
// returns the files a server needs, with this CA as the client CA.
func (ca *CA) ServerTLS(t testing.TB, requireClientCert bool) *ServerTLS {
	t.Helper()
	cert, key := ca.Issue(t, "localhost", nil, nil, false)
	return &ServerTLS{CAFile: ca.certFile, CertFile: cert, KeyFile: key, RequireClientCert: requireClientCert}
}

// ClientTLSConfig returns a client tls.Config trusting only this CA and, if
// certFile is not empty, presenting that certificate and key (from Issue
// with client true). It fails the test if the pair cannot be loaded.
func (ca *CA) ClientTLSConfig(t testing.TB, certFile, keyFile string) *tls.Config {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatalf("testserver: load client key pair: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testserver: serial number: %v", err)
	}
	return n
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("testserver: write %s: %v", path, err)
	}
}

// fileSafe turns a common name into a file name.
func fileSafe(name string) string {
	s := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, name)
	if s == "" || s == "." || s == ".." {
		s = "cert"
	}
	return s
}
