package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/nr-bridge/nr-bridge/internal/devmode"
	"github.com/nr-bridge/nr-bridge/internal/sim"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

func TestSimFlags(t *testing.T) {
	env := map[string]string{"MQTT_PASSWORD": "secret"}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		name    string
		env     map[string]string // instead of env when set
		args    []string
		check   func(t *testing.T, c sim.Config)
		wantErr string
	}{
		{name: "defaults", args: nil, check: func(t *testing.T, c sim.Config) {
			d := sim.DefaultConfig()
			if c.URL != d.URL || c.Nodes != 10 || c.Rate != 1 || c.QoS != 1 || c.Conns != 4 || c.ReplyFraction != 1 || c.Password != "secret" {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "quick start", args: []string{"-nodes", "100", "-rate", "10"}, check: func(t *testing.T, c sim.Config) {
			if c.Nodes != 100 || c.Rate != 10 {
				t.Errorf("got nodes %d rate %v", c.Nodes, c.Rate)
			}
		}},
		{name: "total rate", args: []string{"-nodes", "50", "-total-rate", "1000"}, check: func(t *testing.T, c sim.Config) {
			if c.Rate != 20 {
				t.Errorf("rate = %v, want 20", c.Rate)
			}
		}},
		{name: "everything", args: []string{"-url", "tcp://b:1", "-orgs", "3", "-nodes", "9", "-size", "1024", "-qos", "0",
			"-duration", "1m", "-count", "7", "-conns", "2", "-reply-fraction", "0.25", "-client-prefix", "bench", "-run-id", "r1", "-progress", "0"},
			check: func(t *testing.T, c sim.Config) {
				if c.URL != "tcp://b:1" || c.Orgs != 3 || c.Nodes != 9 || c.Size != 1024 || c.QoS != 0 || c.Duration != time.Minute ||
					c.Count != 7 || c.Conns != 2 || c.ReplyFraction != 0.25 || c.ClientPrefix != "bench" || c.RunID != "r1" || c.Progress != 0 {
					t.Errorf("got %+v", c)
				}
			}},
		{name: "broker from MQTT_URL", env: map[string]string{"MQTT_URL": "tcp://127.0.0.1:1884"}, check: func(t *testing.T, c sim.Config) {
			if c.URL != "tcp://127.0.0.1:1884" || c.TLS != nil {
				t.Errorf("URL %q TLS %v, want MQTT_URL's tcp://127.0.0.1:1884 without TLS", c.URL, c.TLS)
			}
		}},
		{name: "-url beats MQTT_URL", env: map[string]string{"MQTT_URL": "tcp://127.0.0.1:1884"}, args: []string{"-url", "tcp://b:1"},
			check: func(t *testing.T, c sim.Config) {
				if c.URL != "tcp://b:1" {
					t.Errorf("URL %q, want -url's tcp://b:1", c.URL)
				}
			}},
		{name: "credentials in MQTT_URL", env: map[string]string{"MQTT_URL": "tcp://u1:p%40ss@b:1"}, check: func(t *testing.T, c sim.Config) {
			if c.URL != "tcp://b:1" || c.Username != "u1" || c.Password != "p@ss" {
				t.Errorf("URL %q user %q password %q, want tcp://b:1, u1, p@ss", c.URL, c.Username, c.Password)
			}
		}},
		{name: "MQTT_USERNAME wins over the URL's", env: map[string]string{"MQTT_URL": "tcp://u1:p1@b:1", "MQTT_USERNAME": "u2", "MQTT_PASSWORD": "p2"},
			check: func(t *testing.T, c sim.Config) {
				if c.Username != "u2" || c.Password != "p2" {
					t.Errorf("user %q password %q, want u2 p2", c.Username, c.Password)
				}
			}},
		{name: "TLS URL loads MQTT_CA_FILE", env: map[string]string{"MQTT_URL": "ssl://b:8883", "MQTT_CA_FILE": "/nonexistent/ca.pem"}, wantErr: "MQTT_CA_FILE"},
		{name: "plain URL ignores the TLS files", env: map[string]string{"MQTT_URL": "tcp://b:1", "MQTT_CA_FILE": "/nonexistent/ca.pem"},
			check: func(t *testing.T, c sim.Config) {
				if c.TLS != nil {
					t.Errorf("TLS config for a tcp:// URL")
				}
			}},
		{name: "rate and total rate", args: []string{"-rate", "1", "-total-rate", "5"}, wantErr: "alternatives"},
		{name: "qos 2", args: []string{"-qos", "2"}, wantErr: "-qos"},
		{name: "stray argument", args: []string{"x"}, wantErr: "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ge := getenv
			if tt.env != nil {
				ge = func(k string) string { return tt.env[k] }
			}
			c, _, err := parseFlags(tt.args, ge, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

// TestSimCommandAgainstDevBroker runs the command line against the
// embedded dev broker and checks the JSON summary.
func TestSimCommandAgainstDevBroker(t *testing.T) {
	srv, err := devmode.Start(context.Background(), devmode.Options{
		MQTTAddr: "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t)),
		NATSAddr: "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t)),
		DataDir:  t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })

	var stdout, stderr bytes.Buffer
	code := realMain([]string{"-url", "tcp://" + srv.MQTTAddr(), "-nodes", "5", "-orgs", "2", "-rate", "50", "-count", "20",
		"-conns", "2", "-json", "-progress", "0"}, func(string) string { return "" }, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit code %d, stderr:\n%s", code, stderr.String())
	}
	var s struct {
		Nodes        int     `json:"nodes"`
		Conns        int     `json:"conns"`
		EventsSent   uint64  `json:"events_sent"`
		EventsAcked  uint64  `json:"events_acked"`
		EventsFailed uint64  `json:"events_failed"`
		RatePerSec   float64 `json:"rate_per_s"`
		Latency      struct {
			Count uint64  `json:"count"`
			P50   float64 `json:"p50"`
			P999  float64 `json:"p999"`
		} `json:"latency_ms"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("summary %q: %v", stdout.String(), err)
	}
	if s.Nodes != 5 || s.Conns != 2 || s.EventsSent != 100 || s.EventsAcked != 100 || s.EventsFailed != 0 || s.Latency.Count != 100 ||
		s.Latency.P50 <= 0 || s.Latency.P999 < s.Latency.P50 || s.RatePerSec <= 0 {
		t.Fatalf("summary %s", stdout.String())
	}
	if !strings.Contains(stderr.String(), `"msg":"fleet connected"`) {
		t.Errorf("stderr has no JSON fleet connected line:\n%s", stderr.String())
	}
}

func TestSimCommandBadFlags(t *testing.T) {
	var stderr bytes.Buffer
	if code := realMain([]string{"-qos", "3"}, func(string) string { return "" }, io.Discard, &stderr); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	if code := realMain([]string{"-reply-fraction", "2"}, func(string) string { return "" }, io.Discard, &stderr); code != 2 {
		t.Fatalf("exit code %d, want 2 (%s)", code, stderr.String())
	}
}

func TestSimTextSummary(t *testing.T) {
	var b bytes.Buffer
	writeTextSummary(&b, sim.Summary{RunID: "r", Nodes: 2, Conns: 1, Elapsed: 2 * time.Second, EventsSent: 10, EventsAcked: 10, Rate: 5,
		Latency: sim.Latency{Count: 10, P50: 1500 * time.Microsecond, P90: 2 * time.Millisecond, P99: 3 * time.Millisecond, P999: 4 * time.Millisecond, Max: 5 * time.Millisecond}})
	want := "nr-sim summary (run r): 2 nodes on 1 connections, sending for 2s\n" +
		"  events    sent 10  acknowledged 10  failed 0  rate 5.0/s\n" +
		"  latency   p50 1.5ms  p90 2ms  p99 3ms  p99.9 4ms  max 5ms  (publish to PUBACK, 10 samples)\n" +
		"  commands  received 0  replies sent 0  reply errors 0\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	writeTextSummary(&b, sim.Summary{EventsSent: 3})
	if !strings.Contains(b.String(), "latency   n/a") {
		t.Fatalf("QoS 0 summary:\n%s", b.String())
	}
}

// TestSimUsesMQTTURL is the quick start with MQTT_URL set and no -url:
// every event reaches the broker MQTT_URL names (a subscriber there counts
// them), and nr-sim says which broker it connected to.
func TestSimUsesMQTTURL(t *testing.T) {
	srv, err := devmode.Start(context.Background(), devmode.Options{
		MQTTAddr: "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t)),
		NATSAddr: "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t)),
		DataDir:  t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	brokerURL := "tcp://" + srv.MQTTAddr()

	var got atomic.Int64
	u, _ := url.Parse(brokerURL)
	up := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 30, CleanStartOnInitialConnection: true,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
			defer scancel()
			if _, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "org/+/node/+/events", QoS: 1}}}); err == nil {
				close(up)
			}
		},
		ClientConfig: paho.ClientConfig{ClientID: "counter", OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(paho.PublishReceived) (bool, error) { got.Add(1); return true, nil },
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Disconnect(context.Background()) }()
	select {
	case <-up:
	case <-time.After(10 * time.Second):
		t.Fatal("counting subscriber not subscribed")
	}

	var stdout, stderr bytes.Buffer
	env := map[string]string{"MQTT_URL": brokerURL}
	code := realMain([]string{"-nodes", "4", "-rate", "50", "-count", "10", "-conns", "1", "-json", "-progress", "0"},
		func(k string) string { return env[k] }, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit code %d, stderr:\n%s", code, stderr.String())
	}
	testserver.WaitFor(t, 10*time.Second, "40 events at the MQTT_URL broker", func() bool { return got.Load() >= 40 })
	if n := got.Load(); n != 40 {
		t.Fatalf("broker of MQTT_URL got %d events, want 40", n)
	}
	var line map[string]any
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(l, `"msg":"connecting to the broker"`) {
			_ = json.Unmarshal([]byte(l), &line)
		}
	}
	if line["url"] != brokerURL || line["from"] != "MQTT_URL" {
		t.Fatalf("connecting line = %v, want url %s from MQTT_URL; stderr:\n%s", line, brokerURL, stderr.String())
	}
}
