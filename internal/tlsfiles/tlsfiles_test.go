package tlsfiles

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

func TestClient(t *testing.T) {
	ca := testserver.NewCA(t)
	cert, key := ca.Issue(t, "client", nil, nil, true)
	junk := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(junk, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, ca, cert, key, wantErr string
	}{
		{name: "system roots"},
		{name: "ca and client cert", ca: ca.CertFile(), cert: cert, key: key},
		{name: "missing ca", ca: filepath.Join(t.TempDir(), "nope"), wantErr: "X_CA_FILE: open"},
		{name: "ca without pem", ca: junk, wantErr: "X_CA_FILE " + junk + ": no PEM certificate found"},
		{name: "cert without key", cert: cert, wantErr: "X_CERT_FILE/X_KEY_FILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Client("X", tc.ca, tc.cert, tc.key)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (tc.ca != "") != (cfg.RootCAs != nil) || (tc.cert != "") != (len(cfg.Certificates) == 1) {
				t.Fatalf("config %+v does not match the files given", cfg)
			}
		})
	}
}
