package api

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/nr-bridge/nr-bridge/internal/tlsfiles"
)

// TLSConfig turns the API into HTTPS, optionally with client certificates
// (mTLS). With HTTP_TLS_CLIENT_CA_FILE every connection needs a client
// certificate, health probes included: probe over a TCP socket or from a
// client that has one (docs/operations.md "Security").
type TLSConfig struct {
	CertFile     string `env:"HTTP_TLS_CERT_FILE" desc:"PEM certificate (chain) of the API; with HTTP_TLS_KEY_FILE the API serves HTTPS only"`
	KeyFile      string `env:"HTTP_TLS_KEY_FILE" desc:"PEM private key for HTTP_TLS_CERT_FILE"`
	ClientCAFile string `env:"HTTP_TLS_CLIENT_CA_FILE" desc:"PEM CA bundle; when set, every client must present a certificate it signed (mTLS)"`
}

// Enabled reports whether HTTPS is configured.
func (c TLSConfig) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// Load reads the files and returns the server TLS configuration (TLS 1.2
// minimum), or nil when HTTPS is not configured. Errors name the variable,
// so a missing or unreadable file fails at start.
func (c TLSConfig) Load() (*tls.Config, error) {
	if !c.Enabled() {
		if c.ClientCAFile != "" {
			return nil, errors.New("HTTP_TLS_CLIENT_CA_FILE needs HTTP_TLS_CERT_FILE and HTTP_TLS_KEY_FILE")
		}
		return nil, nil
	}
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, errors.New("HTTP_TLS_CERT_FILE and HTTP_TLS_KEY_FILE must be set together")
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("HTTP_TLS_CERT_FILE/HTTP_TLS_KEY_FILE: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if c.ClientCAFile != "" {
		pool, err := tlsfiles.CertPool("HTTP_TLS_CLIENT_CA_FILE", c.ClientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
