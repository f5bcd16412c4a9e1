package ingest_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/ingest"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// tlsLogs collects log output; safe for concurrent use.
type tlsLogs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *tlsLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *tlsLogs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func tlsMQTTConfig(url, clientID, ca, cert, key string) *mqttconn.Config {
	cfg := bridgetest.MQTTConfig(url, clientID)
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = ca, cert, key
	cfg.Workers, cfg.MaxInflight = 2, 500
	return cfg
}

// tlsReceiver runs a receiver writing to a JetStream sink on natsURL and
// stops it at cleanup.
func tlsReceiver(t *testing.T, cfg *mqttconn.Config, natsURL string, log *slog.Logger) *ingest.Receiver {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r, _ := bridgetest.StartJetStreamBridge(t, cfg, natsURL, bridgetest.NATSSinkConfig(), log, nil)
	return r
}

// TestMQTTMutualTLS runs the workers against a Mosquitto TLS listener that
// requires client certificates: with one, events flow into JetStream; without
// one, or trusting another CA, the workers never become ready and both the
// log and the readiness error say why.
func TestMQTTMutualTLS(t *testing.T) {
	ca := testserver.NewCA(t)
	other := testserver.NewCA(t)
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{TLS: ca.ServerTLS(t, true)})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	cert, key := ca.Issue(t, "nr-bridge", nil, nil, true)

	t.Run("client certificate", func(t *testing.T) {
		log := slog.New(slog.NewJSONHandler(&tlsLogs{}, nil))
		r := tlsReceiver(t, tlsMQTTConfig(mq.TLSURL(), "mtls-ok", ca.CertFile(), cert, key), ns.URL(), log)
		testserver.WaitFor(t, 15*time.Second, "workers connected over mTLS", func() bool { return r.Ready() == nil })

		agent := testclient.ConnectMQTT(t, mq.URL(), "agent-1")
		const n = 50
		for i := range n {
			agent.Publish("org/o1/node/n1/events", []byte(fmt.Sprintf(`{"i":%d}`, i)), nil)
		}
		_, js := testclient.ConnectNATS(t, ns.URL())
		testserver.WaitFor(t, 15*time.Second, "50 events in NR_EVENTS", func() bool {
			return testclient.StreamCount(js, "NR_EVENTS") == n
		})
		for _, w := range r.Workers() {
			if w.Inflight() != 0 {
				testserver.WaitFor(t, 5*time.Second, "all acked", func() bool { return w.Inflight() == 0 })
			}
		}
	})

	for _, tc := range []struct {
		name     string
		ca, cert string
		key      string
		want     []string // the log and Ready name one of these
	}{
		// With TLS 1.3 the broker checks the certificate after the client
		// finished its handshake; the client sees the alert (or the closed
		// connection) when it reads CONNACK.
		{name: "no client certificate", ca: ca.CertFile(), want: []string{"the broker asked for a client certificate and none is configured"}},
		{name: "broker certificate from an unknown CA", ca: other.CertFile(), cert: cert, key: key, want: []string{"certificate signed by unknown authority"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &tlsLogs{}
			// Debug: a repeated failure is WARN once, then Debug (ratelog).
			log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			r := tlsReceiver(t, tlsMQTTConfig(mq.TLSURL(), "mtls-"+strings.ReplaceAll(tc.name, " ", "-"), tc.ca, tc.cert, tc.key), ns.URL(), log)
			testserver.WaitFor(t, 15*time.Second, "four failed attempts per worker logged", func() bool {
				return strings.Count(logs.String(), "MQTT connection attempt failed") >= 8
			})
			err := r.Ready()
			if err == nil {
				t.Fatal("workers ready, want not ready")
			}
			t.Logf("Ready() = %v", err)
			mentions := func(s string) bool {
				for _, w := range tc.want {
					if strings.Contains(s, w) {
						return true
					}
				}
				return false
			}
			if !mentions(err.Error()) {
				t.Errorf("Ready() = %v, want it to say why (one of %q)", err, tc.want)
			}
			warns := 0
			for _, line := range strings.Split(logs.String(), "\n") {
				if strings.Contains(line, "MQTT connection attempt failed") {
					if !mentions(line) {
						t.Errorf("log line %s, want the reason", line)
					}
					if strings.Contains(line, `"level":"WARN"`) {
						warns++
					}
				}
				if strings.Contains(line, `"level":"ERROR"`) {
					t.Errorf("ERROR logged for a failed handshake: %s", line)
				}
			}
			// The same failure again and again is one WARN per worker
			// (then Debug until it changes or 30 s pass), not a line every
			// reconnect.
			if warns != 2 {
				t.Errorf("%d WARN lines for 8 or more failed attempts of 2 workers, want 2:\n%s", warns, logs.String())
			}
		})
	}
}
