package natsjs_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/bridgetest"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/internal/publisher"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	"github.com/nr-bridge/nr-bridge/sources/natsjs"
)

// reasonPublisher is the real publisher that also records the reason label
// of every dead letter the source reports.
type reasonPublisher struct {
	*publisher.Publisher
	mu      sync.Mutex
	reasons []string
}

// intakeMetrics makes the test's intake count through the publisher.
func (p *reasonPublisher) intakeMetrics() bridge.IntakeMetrics { return reasonMetrics{p} }

// reasonMetrics records the reason of every dead letter the intake counts.
type reasonMetrics struct{ p *reasonPublisher }

func (reasonMetrics) CommandRefused(string, string) {}

func (m reasonMetrics) DeadLettered(reason string) {
	m.p.mu.Lock()
	m.p.reasons = append(m.p.reasons, reason)
	m.p.mu.Unlock()
}

func (p *reasonPublisher) deadLettered() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.reasons...)
}

// startReasonReplica is startReplica with a reasonPublisher, returning the
// sink too so that tests can change NR_DLQ after it set it up.
func startReasonReplica(t *testing.T, natsURL string, mqtt *mqttconn.Config) *reasonPublisher {
	t.Helper()
	log := testLogger(t).With("replica", mqtt.ClientID)
	nc, err := natsconn.Connect(natsconn.Config{URL: natsURL}, "test "+mqtt.ClientID, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sink, err := bridgetest.StartNATSSink(ctx, nc, streamsConfig(), log, nil)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	pub := &reasonPublisher{Publisher: publisher.New(mqtt, log, nil)}
	if err := pub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	src := natsjs.New(mustJetStream(t, nc), sourceConfig(), streamsConfig().Streams, intakeOf(pub), log)
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := src.Close(sctx); err != nil {
			t.Errorf("source Stop: %v", err)
		}
		if err := pub.Close(sctx); err != nil {
			t.Errorf("publisher Stop: %v", err)
		}
		_ = sink.Close(sctx)
		_ = nc.Drain()
		testserver.WaitFor(t, 10*time.Second, "NATS connection closed", nc.IsClosed)
	})
	testserver.WaitFor(t, 10*time.Second, "publisher connected", func() bool { return pub.Ready() == nil })
	return pub
}

// expectOnlySentinel publishes a valid command and checks that it is the
// only message the subscriber got: one replica publishes in order, so
// anything published before it would have arrived first.
func expectOnlySentinel(t *testing.T, js jetstream.JetStream, sub *subscriber) {
	t.Helper()
	publish(t, js, "nr.org.o1.node.n1.cmd", command("sentinel", time.Now().Unix(), 60))
	testserver.WaitFor(t, 10*time.Second, "the sentinel", func() bool { return len(sub.received()) > 0 })
	if got := sub.received(); len(got) != 1 || string(got[0].Properties.CorrelationData) != "sentinel" {
		t.Fatalf("subscriber got %d messages (first %q), want only the sentinel", len(got), got[0].Properties.CorrelationData)
	}
}

// Issue 12.4 on the stream: a command with a key that is a field name in
// another case, or a duplicate written with an escape, or a control
// character in type, is dead-lettered (reason invalid_command) with the
// field named, and never published.
func TestSourceDeadLettersHostileBodies(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	sub := subscribe(t, broker.URL(), "sub")
	pub := startReasonReplica(t, ns.URL(), mqttConfig(broker.URL(), "bridge-a"))
	_, js := testclient.ConnectNATS(t, ns.URL())

	now := time.Now().Unix()
	doc := func(extra string) []byte {
		return fmt.Appendf(nil, `{"type":"ping","version":1,"correlation_id":"c","issued_at":%d,"ttl_sec":60,"payload":{}%s}`, now, extra)
	}
	cases := []struct {
		subject, wantError string
		body               []byte
	}{
		{"nr.org.o1.node.n1.cmd", `type: key "TYPE" differs from it only in case`, doc(`,"TYPE":"factory-reset","Payload":{"wipe":true}`)},
		{"nr.org.o1.node.n2.cmd", `type: key "TYPE" differs from it only in case`, doc(`,"\u0054YPE":"factory-reset"`)},
		{"nr.org.o1.node.n3.cmd", "type: duplicate key", doc(`,"typ\u0065":"factory-reset"`)},
		{"nr.org.o1.node.n4.cmd", "type: must be printable UTF-8 without control characters",
			fmt.Appendf(nil, `{"type":"ping\r\nNats-Rollup: all","version":1,"correlation_id":"c","issued_at":%d,"ttl_sec":60,"payload":{}}`, now)},
	}
	for _, c := range cases {
		publish(t, js, c.subject, c.body)
	}
	testserver.WaitFor(t, 10*time.Second, "4 dead letters", func() bool { return testclient.StreamCount(js, "NR_DLQ") >= len(cases) })
	testserver.WaitFor(t, 10*time.Second, "NR_COMMANDS empty", func() bool { return testclient.StreamCount(js, "NR_COMMANDS") == 0 })
	dlq := testclient.ReadStream(t, js, "NR_DLQ")
	if len(dlq) != len(cases) {
		t.Fatalf("NR_DLQ has %d messages, want %d", len(dlq), len(cases))
	}
	bySubject := map[string]testclient.StreamMsg{}
	for _, m := range dlq {
		bySubject[m.Header.Get(bridge.HeaderSubject)] = m
	}
	for _, c := range cases {
		m := bySubject[c.subject]
		if got := m.Header.Get(bridge.HeaderError); got != c.wantError || !bytes.Equal(m.Data, c.body) || len(m.Header) != 3 ||
			m.Header.Get(bridge.HeaderReason) != bridge.ReasonInvalidCommand {
			t.Errorf("%s: Nr-Error %q, headers %v, payload %q; want %q, Nr-Reason invalid_command and the body unchanged", c.subject, got, m.Header, m.Data, c.wantError)
		}
	}
	if got := pub.deadLettered(); len(got) != len(cases) || strings.Count(strings.Join(got, ","), bridge.ReasonInvalidCommand) != len(cases) {
		t.Errorf("dead-letter reasons %v, want %d x %s", got, len(cases), bridge.ReasonInvalidCommand)
	}
	expectOnlySentinel(t, js, sub)
}

// Issue 12.6: a 1,048,500-byte command that is not JSON is dead-lettered
// at the first attempt, cut to fit max_payload with Nr-Original-Size,
// instead of being refused, nakked and redelivered every second forever.
func TestSourceDeadLettersNearLimitCommand(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	sub := subscribe(t, broker.URL(), "sub")
	pub := startReasonReplica(t, ns.URL(), mqttConfig(broker.URL(), "bridge-a"))
	nc, js := testclient.ConnectNATS(t, ns.URL())

	const size = 1_048_500
	if int64(size) >= nc.MaxPayload() {
		t.Fatalf("max_payload %d: the command must fit it", nc.MaxPayload())
	}
	body := bytes.Repeat([]byte("x"), size)
	publish(t, js, "nr.org.o1.node.n1.cmd", body)

	testserver.WaitFor(t, 10*time.Second, "the dead letter", func() bool { return testclient.StreamCount(js, "NR_DLQ") >= 1 })
	testserver.WaitFor(t, 10*time.Second, "NR_COMMANDS empty", func() bool { return testclient.StreamCount(js, "NR_COMMANDS") == 0 })
	dlq := testclient.ReadStream(t, js, "NR_DLQ")
	if len(dlq) != 1 {
		t.Fatalf("NR_DLQ has %d messages, want 1", len(dlq))
	}
	m := dlq[0]
	h := m.Header
	if got := h.Get(bridge.HeaderError); got != "not a JSON object: invalid character 'x' looking for beginning of value" {
		t.Errorf("Nr-Error %q", got)
	}
	if h.Get(bridge.HeaderSubject) != "nr.org.o1.node.n1.cmd" || h.Get(bridge.HeaderOriginalSize) != strconv.Itoa(size) ||
		h.Get(bridge.HeaderReason) != bridge.ReasonMalformed || len(h) != 4 {
		t.Errorf("headers %v, want Nr-Reason malformed, Nr-Error, Nr-Subject and Nr-Original-Size %d", h, size)
	}
	if len(m.Data) >= size || len(m.Data) < size-4096 || !bytes.Equal(m.Data, body[:len(m.Data)]) {
		t.Errorf("payload %d bytes, want the first bytes of the command, cut just below max_payload", len(m.Data))
	}
	consumer, err := js.Consumer(context.Background(), "NR_COMMANDS", "nr-bridge")
	if err != nil {
		t.Fatal(err)
	}
	info, err := consumer.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 || info.Delivered.Consumer != 1 {
		t.Errorf("consumer delivered %d, redelivered %d; want one delivery, no redelivery", info.Delivered.Consumer, info.NumRedelivered)
	}
	if got := pub.deadLettered(); len(got) != 1 || got[0] != bridge.ReasonMalformed {
		t.Errorf("dead-letter reasons %v, want [%s]", got, bridge.ReasonMalformed)
	}
	expectOnlySentinel(t, js, sub)
}

// A dead letter that NR_DLQ refuses for good (here: its max_msg_size was
// lowered below what the bridge fitted to) is cut to its minimum, the
// reason and the origin, and written again: the command is terminated, not
// redelivered forever.
func TestSourceDeadLetterRefusedIsCutToMinimum(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	sub := subscribe(t, broker.URL(), "sub")
	startReasonReplica(t, ns.URL(), mqttConfig(broker.URL(), "bridge-a"))
	_, js := testclient.ConnectNATS(t, ns.URL())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, "NR_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	cfg.MaxMsgSize = 4096
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	const size = 100_000
	body := bytes.Repeat([]byte("y"), size)
	publish(t, js, "nr.org.o1.node.n1.cmd", body)

	testserver.WaitFor(t, 10*time.Second, "the dead letter", func() bool { return testclient.StreamCount(js, "NR_DLQ") >= 1 })
	testserver.WaitFor(t, 10*time.Second, "NR_COMMANDS empty", func() bool { return testclient.StreamCount(js, "NR_COMMANDS") == 0 })
	dlq := testclient.ReadStream(t, js, "NR_DLQ")
	if len(dlq) != 1 {
		t.Fatalf("NR_DLQ has %d messages, want 1", len(dlq))
	}
	h := dlq[0].Header
	if h.Get(bridge.HeaderError) != "not a JSON object: invalid character 'y' looking for beginning of value" ||
		h.Get(bridge.HeaderSubject) != "nr.org.o1.node.n1.cmd" || h.Get(bridge.HeaderOriginalSize) != strconv.Itoa(size) || len(dlq[0].Data) != 0 {
		t.Errorf("dead letter headers %v, %d bytes; want the reason, the subject, Nr-Original-Size %d and no payload", h, len(dlq[0].Data), size)
	}
	expectOnlySentinel(t, js, sub)
}
