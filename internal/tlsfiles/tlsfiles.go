// Package tlsfiles loads the PEM files of the bridge's TLS settings (MQTT_*,
// NATS_*, KAFKA_*, HTTP_TLS_*) in one way, so a missing or unreadable file
// fails at start with an error that names the variable to fix.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// Client builds a client TLS config (TLS 1.2 minimum) from PEM files.
// prefix names the variables in errors (prefix_CA_FILE, ...). An empty
// caFile keeps the system roots; certFile and keyFile give a client
// certificate for mutual TLS.
func Client(prefix, caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := CertPool(prefix+"_CA_FILE", caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("%s_CERT_FILE/%s_KEY_FILE: %w", prefix, prefix, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// CertPool reads the PEM certificates of file into a pool; variable names
// the setting in errors. A file without a single PEM certificate is an
// error, not an empty pool that would refuse every peer.
func CertPool(variable, file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", variable, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s %s: no PEM certificate found", variable, file)
	}
	return pool, nil
}
