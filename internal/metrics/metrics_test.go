package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/nr-bridge/nr-bridge/api"
	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/metrics"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/publisher"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// scrape fetches GET /metrics through h and parses it.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value returns the value of name{labels} (a histogram's sample count), or
// -1 when the series is missing.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if got[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

func readyz(t *testing.T, h http.Handler) (int, map[string]string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	var body struct {
		Reasons map[string]string `json:"reasons"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("readyz body %q: %v", rec.Body, err)
	}
	return rec.Code, body.Reasons
}

// TestMetricsEndToEnd forwards 300 events through real Mosquitto, the
// workers and the JetStream sink into an in-process NATS, and checks the
// series at GET /metrics; then takes NATS away and brings it back, checking
// readiness, the connection gauge and the write error and retry counters.
func TestMetricsEndToEnd(t *testing.T) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	m := metrics.New(metrics.BackboneNATS, "v-test")

	cfg := bridgetest.MQTTConfig(mq.URL(), "metrics")
	cfg.Workers, cfg.MaxInflight, cfg.ReconnectMax = 2, 500, time.Second
	scfg := bridgetest.NATSSinkConfig()
	scfg.AckTimeout = time.Second
	r, sink := bridgetest.StartJetStreamBridge(t, cfg, ns.URL(), scfg, log, m)
	m.SetBackboneCheck(sink.Ready)
	h := api.NewHandler(api.Deps{
		Log:     log,
		Metrics: m,
		Ready:   map[string]api.ReadyFunc{"mqtt": r.Ready, "backbone": sink.Ready},
	})
	testserver.WaitFor(t, 10*time.Second, "ready", func() bool { code, _ := readyz(t, h); return code == 200 })

	// Before any message: every series the dashboards use is there.
	fams := scrape(t, h)
	for _, s := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"nr_bridge_messages_received_total", []string{"kind", "reply"}, 0},
		{"nr_bridge_messages_forwarded_total", []string{"kind", "reply", "backbone", "nats"}, 0},
		{"nr_bridge_dead_letters_total", []string{"reason", "too_large"}, 0},
		{"nr_bridge_commands_published_total", []string{"source", "http"}, 0},
		{"nr_bridge_commands_refused_total", []string{"source", "stream", "reason", "expired"}, 0},
		{"nr_bridge_command_publish_latency_seconds", []string{"source", "stream"}, 0},
		{"nr_bridge_mqtt_connected", []string{"connection", "metrics-w1"}, 1},
		{"nr_bridge_mqtt_connected", []string{"connection", "metrics-w2"}, 1},
		{"nr_bridge_backbone_connected", nil, 1},
		{"nr_bridge_build_info", []string{"version", "v-test", "backbone", "nats"}, 1},
		{"nr_bridge_http_requests_total", []string{"route", "GET /readyz", "code", "200"}, 1},
	} {
		if got := value(fams, s.name, s.labels...); got != s.want {
			t.Errorf("before traffic: %s%v = %v, want %v", s.name, s.labels, got, s.want)
		}
	}

	const n = 300
	agent := testclient.ConnectMQTT(t, mq.URL(), "agent")
	for i := range n {
		agent.Publish(fmt.Sprintf("org/o1/node/n%d/events", i%7), []byte(fmt.Sprintf(`{"seq":%d}`, i)), nil)
	}
	// Two events on topics with an ID that breaks the ID rule.
	agent.Publish("org/o1/node/bad.id/events", []byte(`{}`), nil)
	agent.Publish("org/o 1/node/n1/events", []byte(`{}`), nil)

	testserver.WaitFor(t, 30*time.Second, "300 forwarded and every ack sent", func() bool {
		f := scrape(t, h)
		return value(f, "nr_bridge_messages_forwarded_total", "kind", "events", "backbone", "nats") == n &&
			value(f, "nr_bridge_acks_sent_total") == n+2
	})
	fams = scrape(t, h)
	for _, s := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"nr_bridge_messages_forwarded_total", []string{"kind", "events", "backbone", "nats"}, n},
		{"nr_bridge_messages_received_total", []string{"kind", "events"}, n + 2},
		{"nr_bridge_dead_letters_total", []string{"reason", "invalid_id"}, 2},
		{"nr_bridge_dead_letters_total", []string{"reason", "other"}, 0},
		{"nr_bridge_forward_latency_seconds", nil, n},
		{"nr_bridge_acks_sent_total", nil, n + 2},
		{"nr_bridge_write_errors_total", []string{"backbone", "nats"}, 0},
		{"nr_bridge_write_retries_total", []string{"backbone", "nats"}, 0},
		{"nr_bridge_inflight_messages", []string{"worker", "metrics-w1"}, 0},
		{"nr_bridge_inflight_messages", []string{"worker", "metrics-w2"}, 0},
	} {
		if got := value(fams, s.name, s.labels...); got != s.want {
			t.Errorf("after %d events: %s%v = %v, want %v", n, s.name, s.labels, got, s.want)
		}
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes", "process_open_fds"} {
		if fams[name] == nil {
			t.Errorf("%s missing: Go runtime and process collectors are on", name)
		}
	}
	_, js := testclient.ConnectNATS(t, ns.URL())
	if got := testclient.StreamCount(js, "NR_EVENTS"); got != n {
		t.Errorf("NR_EVENTS holds %d messages, want %d", got, n)
	}

	// The backbone goes away: readiness says so within seconds, and writes
	// fail and are retried while the events wait un-acked.
	ns.Shutdown()
	testserver.WaitFor(t, 10*time.Second, "readyz 503 naming the backbone", func() bool {
		code, reasons := readyz(t, h)
		return code == 503 && strings.Contains(reasons["backbone"], "nats")
	})
	if got := value(scrape(t, h), "nr_bridge_backbone_connected"); got != 0 {
		t.Errorf("nr_bridge_backbone_connected = %v while NATS is down, want 0", got)
	}
	const during = 10
	for i := range during {
		agent.Publish("org/o1/node/n1/events", []byte(fmt.Sprintf(`{"outage":%d}`, i)), nil)
	}
	testserver.WaitFor(t, 15*time.Second, "failed writes retried", func() bool {
		f := scrape(t, h)
		return value(f, "nr_bridge_write_errors_total", "backbone", "nats") >= 1 &&
			value(f, "nr_bridge_write_retries_total", "backbone", "nats") >= 1 &&
			value(f, "nr_bridge_inflight_messages", "worker", "metrics-w1")+value(f, "nr_bridge_inflight_messages", "worker", "metrics-w2") == during
	})

	// And comes back: ready again, and the waiting events are forwarded.
	ns.Restart()
	testserver.WaitFor(t, 15*time.Second, "readyz 200 again", func() bool { code, _ := readyz(t, h); return code == 200 })
	testserver.WaitFor(t, 30*time.Second, "events of the outage forwarded", func() bool {
		f := scrape(t, h)
		return value(f, "nr_bridge_messages_forwarded_total", "kind", "events", "backbone", "nats") == n+during &&
			value(f, "nr_bridge_acks_sent_total") == n+2+during
	})
	fams = scrape(t, h)
	if got := value(fams, "nr_bridge_backbone_connected"); got != 1 {
		t.Errorf("nr_bridge_backbone_connected = %v after restart, want 1", got)
	}
	if got := value(fams, "nr_bridge_forward_latency_seconds"); got != n+during {
		t.Errorf("forward latency samples = %v, want %d", got, n+during)
	}
	if got := value(fams, "nr_bridge_http_requests_total", "route", "GET /metrics", "code", "200"); got < 5 {
		t.Errorf("GET /metrics counted %v times, want the scrapes counted", got)
	}
}

// TestCounters checks the methods the other packages call, on a fresh
// registry.
func TestCounters(t *testing.T) {
	m := metrics.New(metrics.BackboneKafka, "v1")
	m.MessageReceived(bridge.KindReply)
	m.MessageForwarded(bridge.KindReply, 30*time.Millisecond)
	m.DeadLettered(bridge.ReasonTooLarge)
	m.DeadLettered("no such reason")
	m.CommandPublished(bridge.SourceHTTP, 5*time.Millisecond)
	m.CommandPublished(bridge.SourceStream, 5*time.Millisecond)
	m.CommandRefused(bridge.SourceHTTP, bridge.ReasonExpired)
	m.CommandRefused(bridge.SourceStream, "made up")
	m.CommandRefused("cli", bridge.ReasonInvalidID)
	m.HTTPRequest("POST /org/{orgId}/broadcast/cmd", 202)
	m.TrackInflight("w9", func() int { return 7 })
	m.TrackOldestInflight("w9", func() time.Duration { return 2500 * time.Millisecond })
	m.PropertiesDropped(bridge.DropReserved, 3)
	m.PropertiesDropped(bridge.DropReserved, 2)
	m.MQTTConnected("x-pub", true)
	m.SetBackboneCheck(func() error { return nil })

	fams := scrape(t, m.Handler())
	for _, s := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"nr_bridge_messages_received_total", []string{"kind", "reply"}, 1},
		{"nr_bridge_messages_forwarded_total", []string{"kind", "reply", "backbone", "kafka"}, 1},
		{"nr_bridge_forward_latency_seconds", nil, 1},
		{"nr_bridge_dead_letters_total", []string{"reason", "too_large"}, 1},
		{"nr_bridge_dead_letters_total", []string{"reason", "other"}, 1},
		{"nr_bridge_commands_published_total", []string{"source", "http"}, 1},
		{"nr_bridge_commands_published_total", []string{"source", "stream"}, 1},
		{"nr_bridge_command_publish_latency_seconds", []string{"source", "http"}, 1},
		{"nr_bridge_commands_refused_total", []string{"source", "http", "reason", "expired"}, 1},
		{"nr_bridge_commands_refused_total", []string{"source", "stream", "reason", "other"}, 1},
		{"nr_bridge_commands_refused_total", []string{"source", "cli", "reason", "invalid_id"}, 1},
		{"nr_bridge_http_requests_total", []string{"route", "POST /org/{orgId}/broadcast/cmd", "code", "202"}, 1},
		{"nr_bridge_inflight_messages", []string{"worker", "w9"}, 7},
		{"nr_bridge_oldest_inflight_seconds", []string{"worker", "w9"}, 2.5},
		{"nr_bridge_properties_dropped_total", []string{"reason", "reserved"}, 5},
		{"nr_bridge_mqtt_connected", []string{"connection", "x-pub"}, 1},
		{"nr_bridge_backbone_connected", nil, 1},
	} {
		if got := value(fams, s.name, s.labels...); got != s.want {
			t.Errorf("%s%v = %v, want %v", s.name, s.labels, got, s.want)
		}
	}
	// Every series is documented and prefixed.
	for name, f := range fams {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_") {
			continue
		}
		if !strings.HasPrefix(name, "nr_bridge_") || f.GetHelp() == "" {
			t.Errorf("series %s: want the nr_bridge_ prefix and a help text", name)
		}
	}
	// Two registries do not share state.
	if got := value(scrape(t, metrics.New(metrics.BackboneNATS, "v2").Handler()), "nr_bridge_messages_received_total", "kind", "reply"); got != 0 {
		t.Errorf("fresh registry has received{reply} = %v, want 0", got)
	}
}

func TestReasonOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{fmt.Errorf("x: %w", bridge.ErrInvalidID), bridge.ReasonInvalidID},
		{fmt.Errorf("x: %w", bridge.ErrTooLarge), bridge.ReasonTooLarge},
		{bridge.ErrExpired, bridge.ReasonExpired},
		{bridge.ErrMalformed, bridge.ReasonMalformed},
		{&bridge.FieldError{Field: "ttl_sec", Reason: "x"}, bridge.ReasonInvalidCommand},
		{fmt.Errorf("x: %w", bridge.ErrOutOfScope), bridge.ReasonOutOfScope},
		{bridge.ErrNotConnected, bridge.ReasonUnavailable},
		{bridge.ErrPublishTimeout, bridge.ReasonUnavailable},
		{fmt.Errorf("other"), bridge.ReasonOther},
	} {
		if got := bridge.ReasonOf(tc.err); got != tc.want {
			t.Errorf("ReasonOf(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestCommandMetrics: the HTTP API and the publisher count published and
// refused commands by source and reason, and the publisher's connection.
func TestCommandMetrics(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	m := metrics.New("nats", "test")
	cfg := &mqttconn.Config{
		URL: mq.URL(), ClientID: "cm", ShareGroup: "g", Workers: 1, KeepAlive: 30 * time.Second,
		ConnectTimeout: 5 * time.Second, ReconnectMin: 100 * time.Millisecond, ReconnectMax: time.Second,
		MaxInflight: 10, AckInterval: 10 * time.Millisecond, PublishTimeout: 5 * time.Second, OrgID: "acme",
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	pub := publisher.New(cfg, log, m)
	if err := pub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = pub.Close(ctx)
	})
	testserver.WaitFor(t, 10*time.Second, "publisher connected", func() bool { return pub.Ready() == nil })
	h := api.NewHandler(api.Deps{Log: log, Commands: bridge.NewIntake(pub, bridge.CommandLimits{}, "acme", m), Metrics: m})
	var postAs func(path, contentType, body string) int
	post := func(path, body string) int {
		return postAs(path, "application/json", body)
	}
	postAs = func(path, contentType, body string) int {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	good := fmt.Sprintf(`{"type":"reboot","version":1,"correlation_id":"c1","issued_at":%d,"ttl_sec":60,"payload":{}}`, time.Now().Unix())
	if code := post("/org/acme/node/n1/cmd", good); code != http.StatusAccepted {
		t.Fatalf("good command: %d", code)
	}
	if code := post("/org/acme/node/n1/cmd", `{"type":"x"}`); code != http.StatusUnprocessableEntity {
		t.Fatalf("invalid command: %d", code)
	}
	if code := post("/org/other/node/n1/cmd", good); code != http.StatusForbidden {
		t.Fatalf("out of scope: %d", code)
	}
	if code := postAs("/org/acme/node/n1/cmd", "text/plain", good); code != http.StatusUnsupportedMediaType {
		t.Fatalf("text/plain: %d", code)
	}
	if code := post("/org/acme/node/n1/cmd", strings.Repeat(" ", api.DefaultMaxBody+1)); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("body over HTTP_MAX_BODY: %d", code)
	}
	fams := scrape(t, h)
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"nr_bridge_commands_published_total", []string{"source", "http"}, 1},
		{"nr_bridge_commands_refused_total", []string{"source", "http", "reason", "invalid_command"}, 1},
		{"nr_bridge_commands_refused_total", []string{"source", "http", "reason", "out_of_scope"}, 1},
		{"nr_bridge_commands_refused_total", []string{"source", "http", "reason", "unsupported_media_type"}, 1},
		{"nr_bridge_commands_refused_total", []string{"source", "http", "reason", "too_large"}, 1},
		{"nr_bridge_commands_refused_total", []string{"source", "http", "reason", "other"}, 0},
		{"nr_bridge_command_publish_latency_seconds", []string{"source", "http"}, 1},
		{"nr_bridge_mqtt_connected", []string{"connection", "cm-pub"}, 1},
	}
	for _, c := range checks {
		if got := value(fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}
