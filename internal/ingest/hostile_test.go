package ingest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/ingest"
	"github.com/nr-bridge/nr-bridge/internal/metrics"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	"github.com/nr-bridge/nr-bridge/sinks/natsjs"
)

// Regression tests for hostile input from nodes (issue 12). Each sends good
// traffic after the hostile message, more events than MQTT_WORKERS x
// MQTT_MAX_INFLIGHT, and requires every one of them to arrive: a message
// that stalled a worker would hold them.

const (
	hostileWorkers  = 2
	hostileInflight = 50
	goodEvents      = 3 * hostileWorkers * hostileInflight // 300
)

func hostileConfig(brokerURL, clientID string) *mqttconn.Config {
	cfg := bridgetest.MQTTConfig(brokerURL, clientID)
	cfg.Workers, cfg.MaxInflight = hostileWorkers, hostileInflight
	return cfg
}

// startMeteredBridge runs a JetStream bridge reporting to a fresh metrics
// registry, and waits for its workers.
func startMeteredBridge(t *testing.T, cfg *mqttconn.Config, natsURL string, scfg natsjs.Config) (*ingest.Receiver, *metrics.Metrics) {
	t.Helper()
	m := metrics.New(metrics.BackboneNATS, "test")
	r, _ := bridgetest.StartJetStreamBridge(t, cfg, natsURL, scfg, testLogger(), m)
	testserver.WaitFor(t, 10*time.Second, "workers ready", func() bool { return r.Ready() == nil })
	return r, m
}

// metricValue is the value of the series name with the label pairs, -1 when
// it does not exist.
func metricValue(t *testing.T, m *metrics.Metrics, name string, labels ...string) float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, s := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range s.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue next
				}
			}
			return sampleValue(s)
		}
	}
	return -1
}

func sampleValue(s *dto.Metric) float64 {
	switch {
	case s.Counter != nil:
		return s.Counter.GetValue()
	case s.Gauge != nil:
		return s.Gauge.GetValue()
	}
	return -1
}

// publishGood publishes goodEvents events from node, msg_id g-<i>, payload
// "good-<i>"; with distinct set, each from its own node g<i> (streams that
// keep one message per subject).
func publishGood(t *testing.T, pub *testclient.MQTT, node string, distinct bool) {
	t.Helper()
	for i := range goodEvents {
		n := node
		if distinct {
			n = fmt.Sprintf("g%d", i)
		}
		pub.Publish("org/acme/node/"+n+"/events", fmt.Appendf(nil, "good-%d", i), testclient.MsgID("g-%d", i))
	}
}

// checkGood checks that stream holds exactly the good events plus extra
// others, each good one once.
func checkGood(t *testing.T, js jetstream.JetStream, stream string, extra int) []testclient.StreamMsg {
	t.Helper()
	testserver.WaitFor(t, 60*time.Second, "every good event", func() bool {
		return testclient.StreamCount(js, stream) >= goodEvents+extra
	})
	msgs := testclient.ReadStream(t, js, stream)
	if len(msgs) != goodEvents+extra {
		t.Fatalf("%s has %d messages, want %d", stream, len(msgs), goodEvents+extra)
	}
	seen := map[string]int{}
	for _, m := range msgs {
		if strings.HasPrefix(string(m.Data), "good-") {
			seen[string(m.Data)]++
		}
	}
	for i := range goodEvents {
		if c := seen[fmt.Sprintf("good-%d", i)]; c != 1 {
			t.Fatalf("good-%d stored %d times, want 1", i, c)
		}
	}
	return msgs
}

// TestReservedPropertiesNeverReachJetStream: JetStream control headers sent
// as user properties (any case) used to become real headers; JetStream
// refused the write with a 400, the worker retried it forever and every
// later PUBACK of the worker waited behind it. They are dropped now, counted
// and the message is stored with its other properties.
func TestReservedPropertiesNeverReachJetStream(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	_, m := startMeteredBridge(t, hostileConfig(mq.URL(), "reserved"), ns.URL(), natsjsConfig())
	_, js := testclient.ConnectNATS(t, ns.URL())
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-reserved")

	props := testclient.Props("msg_id", "evil-1",
		"Nats-Expected-Stream", "NOPE",
		"nats-expected-last-sequence", "1",
		"NATS-EXPECTED-LAST-SUBJECT-SEQUENCE", "1",
		"Nats-Expected-Last-Msg-Id", "nope",
		"Nats-Rollup", "all",
		"Nats-Msg-Id", "forged",
		"Nr-Org", "other",
		"content-type", "text/evil",
		"site", "berlin")
	props.ContentType = "application/json"
	pub.Publish("org/acme/node/evil/events", []byte(`{"evil":true}`), props)
	publishGood(t, pub, "good", false)

	msgs := checkGood(t, js, "NR_EVENTS", 1)
	var evil *testclient.StreamMsg
	for i := range msgs {
		if msgs[i].Subject == "nr.org.acme.node.evil.events" {
			evil = &msgs[i]
		}
	}
	if evil == nil || string(evil.Data) != `{"evil":true}` {
		t.Fatalf("the event with reserved properties was not stored: %v", evil)
	}
	want := map[string][]string{
		"Nr-Topic": {"org/acme/node/evil/events"}, "Nr-Org": {"acme"}, "Nr-Node": {"evil"}, "Nr-Kind": {"events"},
		"Content-Type": {"application/json"}, "site": {"berlin"}, "Nats-Msg-Id": {"acme/evil/evil-1"},
	}
	for k, v := range want {
		if got := evil.Header.Values(k); strings.Join(got, "|") != strings.Join(v, "|") {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	for k := range evil.Header {
		if _, ok := want[k]; !ok && k != "Nr-Received-At" {
			t.Errorf("unexpected header %s: %q", k, evil.Header[k])
		}
	}
	if n := testclient.StreamCount(js, "NR_DLQ"); n != 0 {
		t.Errorf("NR_DLQ has %d messages, want 0", n)
	}
	if got := metricValue(t, m, "nr_bridge_properties_dropped_total", "reason", "reserved"); got != 8 {
		t.Errorf("nr_bridge_properties_dropped_total{reason=reserved} = %v, want 8", got)
	}
}

// TestHeadersTooLargeDeadLettered: 300 user properties of 4,000 bytes
// (1.2 MB of headers, 12 bytes of payload) are over max_payload. The dead
// letter used to be cut in its payload only, was refused as well, and the
// message was acknowledged and lost. Now the dead letter drops the user
// headers until it fits and is stored; nothing is acknowledged unstored.
func TestHeadersTooLargeDeadLettered(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	_, m := startMeteredBridge(t, hostileConfig(mq.URL(), "hdrs"), ns.URL(), natsjsConfig())
	_, js := testclient.ConnectNATS(t, ns.URL())
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-hdrs")

	props := testclient.MsgID("fat")
	big := strings.Repeat("v", 4000)
	for i := range 300 {
		props.User = append(props.User, testclient.Props(fmt.Sprintf("p%03d", i), big).User...)
	}
	pub.Publish("org/acme/node/fat/events", []byte("twelve bytes"), props)
	publishGood(t, pub, "good", false)

	checkGood(t, js, "NR_EVENTS", 0)
	testserver.WaitFor(t, 20*time.Second, "the dead letter", func() bool { return testclient.StreamCount(js, "NR_DLQ") == 1 })
	dl := testclient.ReadStream(t, js, "NR_DLQ")[0]
	if dl.Subject != "nr.dlq.events" || string(dl.Data) != "twelve bytes" {
		t.Fatalf("dead letter on %s with payload %q", dl.Subject, dl.Data)
	}
	if e := dl.Header.Get("Nr-Error"); !strings.Contains(e, "message too large") || !strings.Contains(e, "maximum payload exceeded") {
		t.Errorf("Nr-Error %q, want the size refusal with the server's error", e)
	}
	if dl.Header.Get("Nr-Topic") != "org/acme/node/fat/events" || dl.Header.Get("Nats-Msg-Id") != "acme/fat/fat" ||
		dl.Header.Get("Nr-Original-Size") != "" {
		t.Errorf("dead letter headers: Nr-Topic %q Nats-Msg-Id %q Nr-Original-Size %q", dl.Header.Get("Nr-Topic"),
			dl.Header.Get("Nats-Msg-Id"), dl.Header.Get("Nr-Original-Size"))
	}
	kept := 0
	for i := range 300 {
		if v := dl.Header.Get(fmt.Sprintf("p%03d", i)); v == big {
			kept++
		}
	}
	if dropped := dl.Header.Get("Nr-Dropped-Headers"); dropped != fmt.Sprint(300-kept) || kept == 0 || kept == 300 {
		t.Errorf("Nr-Dropped-Headers %q with %d of 300 properties kept", dropped, kept)
	}
	if got := metricValue(t, m, "nr_bridge_dead_letters_total", "reason", "too_large"); got != 1 {
		t.Errorf("dead_letters_total{too_large} = %v, want 1", got)
	}
}

// TestDedupeScopedToNode: two tenants' nodes use the same msg_id; both
// events are stored (JetStream used to drop the second as a duplicate).
func TestDedupeScopedToNode(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	startMeteredBridge(t, hostileConfig(mq.URL(), "dedupe"), ns.URL(), natsjsConfig())
	_, js := testclient.ConnectNATS(t, ns.URL())
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-dedupe")
	pub.Publish("org/tenantA/node/x/events", []byte("a"), testclient.MsgID("K"))
	pub.Publish("org/tenantB/node/v/events", []byte("b"), testclient.MsgID("K"))
	pub.Publish("org/tenantB/node/v/events", []byte("b"), testclient.MsgID("K")) // a real duplicate: stored once
	publishGood(t, pub, "good", false)

	msgs := checkGood(t, js, "NR_EVENTS", 2)
	ids := map[string]string{}
	for _, m := range msgs {
		if !strings.HasPrefix(string(m.Data), "good-") {
			ids[string(m.Data)] = m.Header.Get("Nats-Msg-Id")
		}
	}
	if len(ids) != 2 || ids["a"] != "tenantA/x/K" || ids["b"] != "tenantB/v/K" {
		t.Fatalf("stored %v, want a -> tenantA/x/K and b -> tenantB/v/K", ids)
	}
}

// createStreams creates the sink's three streams as an operator would, for
// a bridge with NATS_MANAGE_STREAMS=false; change adjusts each config.
func createStreams(t *testing.T, js jetstream.JetStream, change func(*jetstream.StreamConfig)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, sc := range []jetstream.StreamConfig{
		{Name: "NR_EVENTS", Subjects: []string{"nr.org.*.node.*.events"}},
		{Name: "NR_REPLIES", Subjects: []string{"nr.org.*.node.*.reply"}},
		{Name: "NR_DLQ", Subjects: []string{"nr.dlq.>"}},
	} {
		sc.Storage, sc.Duplicates = jetstream.FileStorage, 10*time.Minute
		if change != nil {
			change(&sc)
		}
		if _, err := js.CreateStream(ctx, sc); err != nil {
			t.Fatalf("create stream %s: %v", sc.Name, err)
		}
	}
}

func unmanaged() natsjs.Config {
	c := natsjsConfig()
	c.ManageStreams = false
	return c
}

// TestRejectedWriteDeadLettered: JetStream refuses a write for good (a
// sealed replies stream: API error 400, 10109). The reply is dead-lettered
// at once with the server's error as Nr-Error and reason rejected, and the
// events after it are stored.
func TestRejectedWriteDeadLettered(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	_, js := testclient.ConnectNATS(t, ns.URL())
	createStreams(t, js, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "NR_REPLIES")
	if err != nil {
		t.Fatal(err)
	}
	sc := s.CachedInfo().Config
	sc.Sealed = true
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		t.Fatalf("seal NR_REPLIES: %v", err)
	}
	_, m := startMeteredBridge(t, hostileConfig(mq.URL(), "rejected"), ns.URL(), unmanaged())
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-rejected")
	pub.Publish("org/acme/node/n1/reply", []byte("reply"), testclient.MsgID("r1"))
	publishGood(t, pub, "good", false)

	checkGood(t, js, "NR_EVENTS", 0)
	testserver.WaitFor(t, 20*time.Second, "the dead letter", func() bool { return testclient.StreamCount(js, "NR_DLQ") == 1 })
	dl := testclient.ReadStream(t, js, "NR_DLQ")[0]
	if dl.Subject != "nr.dlq.reply" || string(dl.Data) != "reply" || dl.Header.Get("Nr-Topic") != "org/acme/node/n1/reply" {
		t.Fatalf("dead letter %s %q %v", dl.Subject, dl.Data, dl.Header)
	}
	if e := dl.Header.Get("Nr-Error"); !strings.Contains(e, "refused by the backbone") || !strings.Contains(e, "err_code=10109") {
		t.Errorf("Nr-Error %q, want the refusal with the server's error", e)
	}
	if got := metricValue(t, m, "nr_bridge_dead_letters_total", "reason", "rejected"); got != 1 {
		t.Errorf("dead_letters_total{rejected} = %v, want 1", got)
	}
}

// TestPoisonDeadLettered: a stream that keeps one message per subject and
// discards new ones refuses node p's second event with a 503 ("maximum
// messages per subject exceeded"), a transient error, while everything
// else is stored. After three attempts with later messages written it is
// dead-lettered as poison, and the worker acknowledges again.
func TestPoisonDeadLettered(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	_, js := testclient.ConnectNATS(t, ns.URL())
	createStreams(t, js, func(sc *jetstream.StreamConfig) {
		if sc.Name == "NR_EVENTS" {
			sc.MaxMsgsPerSubject, sc.Discard, sc.DiscardNewPerSubject = 1, jetstream.DiscardNew, true
		}
	})
	_, m := startMeteredBridge(t, hostileConfig(mq.URL(), "poison"), ns.URL(), unmanaged())
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-poison")
	pub.Publish("org/acme/node/p/events", []byte("first"), testclient.MsgID("p1"))
	testserver.WaitFor(t, 10*time.Second, "the first event", func() bool { return testclient.StreamCount(js, "NR_EVENTS") == 1 })
	pub.Publish("org/acme/node/p/events", []byte("second"), testclient.MsgID("p2"))
	publishGood(t, pub, "", true)

	checkGood(t, js, "NR_EVENTS", 1)
	testserver.WaitFor(t, 20*time.Second, "the poison dead letter", func() bool { return testclient.StreamCount(js, "NR_DLQ") == 1 })
	dl := testclient.ReadStream(t, js, "NR_DLQ")[0]
	if dl.Subject != "nr.dlq.events" || string(dl.Data) != "second" || dl.Header.Get("Nats-Msg-Id") != "acme/p/p2" {
		t.Fatalf("dead letter %s %q %v", dl.Subject, dl.Data, dl.Header)
	}
	if e := dl.Header.Get("Nr-Error"); !strings.HasPrefix(e, "poison message") || !strings.Contains(e, "maximum messages per subject exceeded") {
		t.Errorf("Nr-Error %q, want poison with the server's last error", e)
	}
	if got := metricValue(t, m, "nr_bridge_dead_letters_total", "reason", "poison"); got != 1 {
		t.Errorf("dead_letters_total{poison} = %v, want 1", got)
	}
}

// TestDeadLetterCutToMinimum: the dead-letter stream takes at most 2 KB per
// message, less than max_payload. An oversized event's dead letter, cut to
// max_payload, is refused by the stream; it is written again cut to its
// minimum (the bridge's own headers, no payload) instead of being dropped.
func TestDeadLetterCutToMinimum(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	_, js := testclient.ConnectNATS(t, ns.URL())
	createStreams(t, js, func(sc *jetstream.StreamConfig) {
		if sc.Name == "NR_DLQ" {
			sc.MaxMsgSize = 2048
		}
	})
	_, m := startMeteredBridge(t, hostileConfig(mq.URL(), "minimal"), ns.URL(), unmanaged())
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-minimal")
	pub.Publish("org/acme/node/big/events", make([]byte, 1500*1024), testclient.Props("msg_id", "big", "site", "berlin"))
	publishGood(t, pub, "good", false)

	checkGood(t, js, "NR_EVENTS", 0)
	testserver.WaitFor(t, 20*time.Second, "the dead letter", func() bool { return testclient.StreamCount(js, "NR_DLQ") == 1 })
	dl := testclient.ReadStream(t, js, "NR_DLQ")[0]
	if len(dl.Data) != 0 || dl.Header.Get("Nr-Original-Size") != fmt.Sprint(1500*1024) ||
		dl.Header.Get("Nr-Topic") != "org/acme/node/big/events" || !strings.Contains(dl.Header.Get("Nr-Error"), "message too large") {
		t.Fatalf("dead letter: %d bytes, headers %v", len(dl.Data), dl.Header)
	}
	if dl.Header.Get("site") != "" || dl.Header.Get("Nr-Dropped-Headers") != "1" {
		t.Errorf("user property kept or not counted: %v", dl.Header)
	}
	if got := metricValue(t, m, "nr_bridge_dead_letters_total", "reason", "too_large"); got != 1 {
		t.Errorf("dead_letters_total{too_large} = %v, want 1", got)
	}
}

// TestStallReported: a dead letter no stream takes (the dead-letter stream
// refuses every message over 64 bytes) is never acknowledged, so its worker
// cannot acknowledge anything after it. After MQTT_STALL_TIMEOUT the
// receiver is not ready, naming the worker and the topic, and the gauge
// shows the wait; once the stream is fixed the dead letter is written and
// the worker is ready again.
func TestStallReported(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	_, js := testclient.ConnectNATS(t, ns.URL())
	createStreams(t, js, func(sc *jetstream.StreamConfig) {
		if sc.Name == "NR_DLQ" {
			sc.MaxMsgSize = 64
		}
	})
	cfg := hostileConfig(mq.URL(), "stall")
	cfg.Workers, cfg.StallTimeout = 1, 500*time.Millisecond
	r, m := startMeteredBridge(t, cfg, ns.URL(), unmanaged())
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-stall")
	pub.Publish("org/bad.org/node/n1/events", []byte("bad id"), nil)

	testserver.WaitFor(t, 20*time.Second, "the stall in readiness", func() bool {
		err := r.Ready()
		return err != nil && strings.Contains(err.Error(), "mqtt workers stalled: stall-w1: no acknowledgement for") &&
			strings.Contains(err.Error(), "oldest un-acked message on topic org/bad.org/node/n1/events")
	})
	if got := metricValue(t, m, "nr_bridge_oldest_inflight_seconds", "worker", "stall-w1"); got < 0.5 {
		t.Errorf("oldest_inflight_seconds = %v, want > 0.5", got)
	}
	if n := testclient.StreamCount(js, "NR_DLQ"); n != 0 {
		t.Fatalf("NR_DLQ has %d messages", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "NR_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	sc := s.CachedInfo().Config
	sc.MaxMsgSize = -1
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	testserver.WaitFor(t, 20*time.Second, "ready again", func() bool { return r.Ready() == nil })
	publishGood(t, pub, "good", false)
	checkGood(t, js, "NR_EVENTS", 0)
	dl := testclient.ReadStream(t, js, "NR_DLQ")
	if len(dl) != 1 || dl[0].Header.Get("Nr-Topic") != "org/bad.org/node/n1/events" || len(dl[0].Data) != 0 {
		t.Fatalf("dead letters %v", dl)
	}
	if got := metricValue(t, m, "nr_bridge_oldest_inflight_seconds", "worker", "stall-w1"); got >= 0.5 {
		t.Errorf("oldest_inflight_seconds = %v after the stall", got)
	}
}
