package api_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/api"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// serveTLS starts the API on a free port with cfg and returns its address.
func serveTLS(t *testing.T, cfg api.TLSConfig) string {
	t.Helper()
	tc, err := cfg.Load()
	if err != nil {
		t.Fatal(err)
	}
	h := api.NewHandler(api.Deps{Log: slog.New(slog.DiscardHandler)})
	srv, err := api.ListenTLS("127.0.0.1:0", tc, h, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return srv.Addr()
}

func client(tc *tls.Config) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
}

func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func TestHTTPS(t *testing.T) {
	ca := testserver.NewCA(t)
	st := ca.ServerTLS(t, false)
	addr := serveTLS(t, api.TLSConfig{CertFile: st.CertFile, KeyFile: st.KeyFile})

	code, body, err := get(client(ca.ClientTLSConfig(t, "", "")), "https://"+addr+"/healthz")
	if err != nil || code != 200 {
		t.Fatalf("HTTPS with the CA: %d %s %v", code, body, err)
	}
	// Plain HTTP to the HTTPS port gets Go's 400 "HTTP request to an HTTPS
	// server", never the API.
	code, body, err = get(client(nil), "http://"+addr+"/healthz")
	if err != nil || code != http.StatusBadRequest || !strings.Contains(body, "HTTPS server") {
		t.Fatalf("plain HTTP to HTTPS: %d %q %v, want 400 from the TLS server", code, body, err)
	}
	// A client that does not trust the CA refuses the certificate.
	if _, _, err = get(client(&tls.Config{MinVersion: tls.VersionTLS12}), "https://"+addr+"/healthz"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("HTTPS without the CA: err %v, want a certificate error", err)
	}
	// TLS 1.1 is refused.
	old := ca.ClientTLSConfig(t, "", "")
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, _, err = get(client(old), "https://"+addr+"/healthz"); err == nil {
		t.Fatal("TLS 1.1 handshake succeeded, want TLS 1.2 minimum")
	}
}

func TestHTTPSClientCertificates(t *testing.T) {
	ca := testserver.NewCA(t)
	other := testserver.NewCA(t)
	st := ca.ServerTLS(t, true)
	addr := serveTLS(t, api.TLSConfig{CertFile: st.CertFile, KeyFile: st.KeyFile, ClientCAFile: ca.CertFile()})
	cert, key := ca.Issue(t, "operator", nil, nil, true)
	otherCert, otherKey := other.Issue(t, "stranger", nil, nil, true)

	if code, body, err := get(client(ca.ClientTLSConfig(t, cert, key)), "https://"+addr+"/healthz"); err != nil || code != 200 {
		t.Fatalf("mTLS with a client certificate: %d %s %v", code, body, err)
	}
	for name, tc := range map[string]*tls.Config{
		"no client certificate":       ca.ClientTLSConfig(t, "", ""),
		"certificate from another CA": ca.ClientTLSConfig(t, otherCert, otherKey),
	} {
		t.Run(name, func(t *testing.T) {
			code, _, err := get(client(tc), "https://"+addr+"/healthz")
			if err == nil {
				t.Fatalf("status %d, want the handshake refused", code)
			}
		})
	}
}

func TestTLSConfigLoad(t *testing.T) {
	ca := testserver.NewCA(t)
	st := ca.ServerTLS(t, false)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		name    string
		cfg     api.TLSConfig
		wantNil bool
		wantErr string
	}{
		{name: "off", cfg: api.TLSConfig{}, wantNil: true},
		{name: "cert and key", cfg: api.TLSConfig{CertFile: st.CertFile, KeyFile: st.KeyFile}},
		{name: "cert without key", cfg: api.TLSConfig{CertFile: st.CertFile}, wantErr: "HTTP_TLS_CERT_FILE and HTTP_TLS_KEY_FILE must be set together"},
		{name: "missing cert", cfg: api.TLSConfig{CertFile: missing, KeyFile: st.KeyFile}, wantErr: "HTTP_TLS_CERT_FILE/HTTP_TLS_KEY_FILE"},
		{name: "client CA without cert", cfg: api.TLSConfig{ClientCAFile: ca.CertFile()}, wantErr: "HTTP_TLS_CLIENT_CA_FILE needs"},
		{name: "missing client CA", cfg: api.TLSConfig{CertFile: st.CertFile, KeyFile: st.KeyFile, ClientCAFile: missing}, wantErr: "HTTP_TLS_CLIENT_CA_FILE: open"},
		{name: "client CA not PEM", cfg: api.TLSConfig{CertFile: st.CertFile, KeyFile: st.KeyFile, ClientCAFile: st.KeyFile}, wantErr: "HTTP_TLS_CLIENT_CA_FILE " + st.KeyFile + ": no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cfg.Load()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Load = %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != tc.wantNil {
				t.Fatalf("Load = %v, want nil %v", got, tc.wantNil)
			}
			if got != nil && got.MinVersion != tls.VersionTLS12 {
				t.Fatalf("MinVersion %x, want TLS 1.2", got.MinVersion)
			}
		})
	}
}
