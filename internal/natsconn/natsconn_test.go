package natsconn_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.uber.org/goleak"

	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// logBuffer collects JSON log lines; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns the log records whose msg is msg.
func (b *logBuffer) records(msg string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(b.buf.String(), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

func newLog() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

func connect(t *testing.T, cfg natsconn.Config, log *slog.Logger) *nats.Conn {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	nc, err := natsconn.Connect(cfg, "test", log)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func roundTrip(t *testing.T, nc *nats.Conn) {
	t.Helper()
	sub, err := nc.SubscribeSync("t.echo")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Publish("t.echo", []byte("ping")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil || string(m.Data) != "ping" {
		t.Fatalf("round trip: %v %v", m, err)
	}
}

func TestConnectTLSWithUserPassword(t *testing.T) {
	ca := testserver.NewCA(t)
	ns := testserver.StartNATS(t, testserver.NATSOptions{
		TLS:   ca.ServerTLS(t, true),
		Users: map[string]string{"bridge": "s3cret-pw"},
	})
	cert, key := ca.Issue(t, "bridge", nil, nil, true)
	log, logs := newLog()
	nc := connect(t, natsconn.Config{
		URL: ns.URL(), CAFile: ca.CertFile(), CertFile: cert, KeyFile: key,
		User: "bridge", Password: "s3cret-pw",
	}, log)
	testserver.WaitFor(t, 10*time.Second, "NATS connected over TLS", nc.IsConnected)
	roundTrip(t, nc)
	if cs, err := nc.TLSConnectionState(); err != nil || len(cs.PeerCertificates) == 0 {
		t.Fatalf("connection is not TLS: %v", err)
	}
	if n := len(logs.records("NATS connection attempt failed")); n != 0 {
		t.Fatalf("%d failed attempts logged, want 0", n)
	}
}

func TestConnectTLSWithToken(t *testing.T) {
	ca := testserver.NewCA(t)
	ns := testserver.StartNATS(t, testserver.NATSOptions{TLS: ca.ServerTLS(t, false), Token: "tok-123"})
	log, _ := newLog()
	nc := connect(t, natsconn.Config{URL: ns.URL(), CAFile: ca.CertFile(), Token: "tok-123"}, log)
	testserver.WaitFor(t, 10*time.Second, "NATS connected with a token", nc.IsConnected)
	roundTrip(t, nc)
}

// A wrong password is a clear error: each attempt is logged with the
// server's reason (WARN once, then Debug while it repeats), LastError says
// it, and the connection keeps retrying instead of closing for good.
func TestConnectWrongPassword(t *testing.T) {
	ca := testserver.NewCA(t)
	ns := testserver.StartNATS(t, testserver.NATSOptions{
		TLS:   ca.ServerTLS(t, false),
		Users: map[string]string{"bridge": "s3cret-pw"},
	})
	log, logs := newLog()
	nc := connect(t, natsconn.Config{URL: ns.URL(), CAFile: ca.CertFile(), User: "bridge", Password: "wrong"}, log)
	testserver.WaitFor(t, 15*time.Second, "three failed attempts logged", func() bool {
		return len(logs.records("NATS connection attempt failed")) >= 3
	})
	recs := logs.records("NATS connection attempt failed")
	warns := 0
	for _, r := range recs {
		if !strings.Contains(strings.ToLower(r["err"].(string)), "authorization violation") {
			t.Errorf("attempt logged with err %q, want the authorization violation", r["err"])
		}
		if r["level"] == "WARN" {
			warns++
		}
	}
	if warns != 1 {
		t.Errorf("%d WARN lines for %d identical failures, want 1", warns, len(recs))
	}
	if nc.IsConnected() || nc.IsClosed() {
		t.Fatalf("status %s, want RECONNECTING (retrying)", nc.Status())
	}
	if err := nc.LastError(); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Errorf("LastError = %v, want the authorization violation", err)
	}
	for _, r := range logs.records("NATS connection lost") {
		t.Errorf("unexpected %v", r)
	}
	if strings.Contains(logs.buf.String(), "s3cret-pw") || strings.Contains(logs.buf.String(), `"wrong"`) {
		t.Error("a password is in the log")
	}
}

// A refused TLS handshake (no client certificate for a server that
// requires one, or a server certificate from an unknown CA) is logged per
// attempt with the TLS reason.
func TestConnectTLSHandshakeFailure(t *testing.T) {
	ca := testserver.NewCA(t)
	other := testserver.NewCA(t)
	ns := testserver.StartNATS(t, testserver.NATSOptions{TLS: ca.ServerTLS(t, true)})
	cert, key := ca.Issue(t, "bridge", nil, nil, true)
	for _, tc := range []struct {
		name string
		cfg  natsconn.Config
		want []string // any of
	}{
		{name: "no client certificate", cfg: natsconn.Config{URL: ns.URL(), CAFile: ca.CertFile()},
			// With TLS 1.3 the client only sees the server close the
			// connection after the handshake; nats.go says so.
			want: []string{"certificate required", "bad certificate", "tls error: connection closed by remote after TLS handshake"}},
		{name: "unknown server CA", cfg: natsconn.Config{URL: ns.URL(), CAFile: other.CertFile(), CertFile: cert, KeyFile: key},
			want: []string{"certificate signed by unknown authority"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, logs := newLog()
			nc := connect(t, tc.cfg, log)
			testserver.WaitFor(t, 15*time.Second, "two failed attempts logged", func() bool {
				return len(logs.records("NATS connection attempt failed")) >= 2
			})
			for _, r := range logs.records("NATS connection attempt failed") {
				msg, _ := r["err"].(string)
				ok := false
				for _, w := range tc.want {
					ok = ok || strings.Contains(msg, w)
				}
				if !ok {
					t.Errorf("attempt logged with err %q, want one of %q", msg, tc.want)
				}
			}
			if nc.IsConnected() {
				t.Fatal("connected, want the handshake refused")
			}
		})
	}
}

func TestConfigFiles(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	seedFile := filepath.Join(dir, "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	ca := testserver.NewCA(t)
	cert, key := ca.Issue(t, "bridge", nil, nil, true)
	const url = "nats://127.0.0.1:4222"
	for _, tc := range []struct {
		name    string
		cfg     natsconn.Config
		wantErr string // "" = valid
	}{
		{name: "defaults", cfg: natsconn.Config{URL: url}},
		{name: "tls files", cfg: natsconn.Config{URL: url, CAFile: ca.CertFile(), CertFile: cert, KeyFile: key}},
		{name: "nkey seed", cfg: natsconn.Config{URL: url, NKeyFile: seedFile}},
		{name: "bad url", cfg: natsconn.Config{URL: "localhost"}, wantErr: "NATS_URL"},
		{name: "missing CA", cfg: natsconn.Config{URL: url, CAFile: missing}, wantErr: "NATS_CA_FILE"},
		{name: "CA without PEM", cfg: natsconn.Config{URL: url, CAFile: junk}, wantErr: "NATS_CA_FILE"},
		{name: "missing cert", cfg: natsconn.Config{URL: url, CertFile: missing, KeyFile: key}, wantErr: "NATS_CERT_FILE"},
		{name: "cert without key", cfg: natsconn.Config{URL: url, CertFile: cert}, wantErr: "NATS_CERT_FILE and NATS_KEY_FILE"},
		{name: "missing creds", cfg: natsconn.Config{URL: url, CredsFile: missing}, wantErr: "NATS_CREDS_FILE"},
		{name: "creds not a creds file", cfg: natsconn.Config{URL: url, CredsFile: junk}, wantErr: "NATS_CREDS_FILE"},
		{name: "missing nkey seed", cfg: natsconn.Config{URL: url, NKeyFile: missing}, wantErr: "NATS_NKEY_FILE"},
		{name: "nkey file without seed", cfg: natsconn.Config{URL: url, NKeyFile: junk}, wantErr: "NATS_NKEY_FILE"},
		{name: "password without user", cfg: natsconn.Config{URL: url, Password: "x"}, wantErr: "NATS_PASSWORD needs NATS_USER"},
		{name: "two auth methods", cfg: natsconn.Config{URL: url, User: "u", Password: "p", Token: "t"}, wantErr: "set only one of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate = %v, want an error naming %s", err, tc.wantErr)
			}
		})
	}
}
