package bridge_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	"github.com/nr-bridge/nr-bridge/sinks/natsjs"
)

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func mqttConfig(brokerURL, clientID string) *bridge.MQTTConfig {
	cfg := bridgetest.MQTTConfig(brokerURL, clientID)
	cfg.Workers, cfg.MaxInflight, cfg.ReconnectMax = 2, 500, time.Second
	return cfg
}

func natsjsConfig() natsjs.Config { return bridgetest.NATSSinkConfig() }

// startBridge runs a receiver with a JetStream sink, stopped at cleanup.
func startBridge(t *testing.T, cfg *bridge.MQTTConfig, natsURL string) *bridge.Receiver {
	t.Helper()
	return startBridgeWith(t, cfg, natsURL, natsjsConfig())
}

func startBridgeWith(t *testing.T, cfg *bridge.MQTTConfig, natsURL string, scfg natsjs.Config) *bridge.Receiver {
	t.Helper()
	r, _ := bridgetest.StartJetStreamBridge(t, cfg, natsURL, scfg, testLogger())
	testserver.WaitFor(t, 10*time.Second, "workers ready", func() bool { return r.Ready() == nil })
	return r
}

func TestForwardEventsAndReplies(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	startBridge(t, mqttConfig(mq.URL(), "fwd"), ns.URL())
	_, js := testclient.ConnectNATS(t, ns.URL())

	const nodes, events, replies = 4, 1000, 250
	done := make(chan struct{}, nodes)
	for n := 0; n < nodes; n++ {
		pub := testclient.ConnectMQTT(t, mq.URL(), fmt.Sprintf("node-%d", n))
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; i < events; i++ {
				props := testclient.Props("msg_id", fmt.Sprintf("e-%d-%d", n, i), "fw", "1.2")
				props.ContentType = "application/json"
				if err := pub.TryPublish(fmt.Sprintf("org/acme/node/n%d/events", n), fmt.Appendf(nil, `{"n":%d,"seq":%d}`, n, i), props); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
				if i < replies {
					rp := testclient.Props("msg_id", fmt.Sprintf("r-%d-%d", n, i))
					rp.CorrelationData = fmt.Appendf(nil, "corr-%d", i)
					if err := pub.TryPublish(fmt.Sprintf("org/acme/node/n%d/reply", n), []byte{0xde, 0xad, byte(i)}, rp); err != nil {
						t.Errorf("publish: %v", err)
						return
					}
				}
			}
		}()
	}
	bad := testclient.ConnectMQTT(t, mq.URL(), "bad-node")
	bad.Publish("org/bad.org/node/n1/events", []byte("poison"), nil)
	for n := 0; n < nodes; n++ {
		<-done
	}

	testserver.WaitFor(t, 30*time.Second, "all messages in the streams", func() bool {
		return testclient.StreamCount(js, "NR_EVENTS") >= nodes*events &&
			testclient.StreamCount(js, "NR_REPLIES") >= nodes*replies &&
			testclient.StreamCount(js, "NR_DLQ") >= 1
	})
	time.Sleep(200 * time.Millisecond) // let a stray duplicate show up
	if got := testclient.StreamCount(js, "NR_EVENTS"); got != nodes*events {
		t.Fatalf("NR_EVENTS has %d messages, want exactly %d", got, nodes*events)
	}

	seen := map[string]bool{}
	for _, m := range testclient.ReadStream(t, js, "NR_EVENTS") {
		id := m.Header.Get("Nats-Msg-Id")
		if seen[id] {
			t.Fatalf("duplicate event %s", id)
		}
		seen[id] = true
		var n, n2, i int // Nats-Msg-Id is the msg_id scoped to the node: acme/n<n>/e-<n>-<i>
		if _, err := fmt.Sscanf(id, "acme/n%d/e-%d-%d", &n, &n2, &i); err != nil || n != n2 {
			t.Fatalf("bad msg id %q", id)
		}
		wantTopic := fmt.Sprintf("org/acme/node/n%d/events", n)
		want := map[string]string{
			"Nr-Topic": wantTopic, "Nr-Org": "acme", "Nr-Node": fmt.Sprintf("n%d", n), "Nr-Kind": "events",
			"Content-Type": "application/json", "fw": "1.2",
		}
		for k, v := range want {
			if got := m.Header.Get(k); got != v {
				t.Fatalf("event %s header %s = %q, want %q", id, k, got, v)
			}
		}
		if m.Subject != fmt.Sprintf("nr.org.acme.node.n%d.events", n) {
			t.Fatalf("subject %q", m.Subject)
		}
		if string(m.Data) != fmt.Sprintf(`{"n":%d,"seq":%d}`, n, i) {
			t.Fatalf("payload %q", m.Data)
		}
		if _, err := time.Parse(time.RFC3339Nano, m.Header.Get("Nr-Received-At")); err != nil || !strings.HasSuffix(m.Header.Get("Nr-Received-At"), "Z") {
			t.Fatalf("Nr-Received-At %q: %v", m.Header.Get("Nr-Received-At"), err)
		}
		if m.Header.Get("msg_id") != "" || m.Header.Get("Nr-Correlation-Data") != "" {
			t.Fatalf("unexpected headers %v", m.Header)
		}
	}
	if len(seen) != nodes*events {
		t.Fatalf("%d distinct events, want %d", len(seen), nodes*events)
	}

	replyMsgs := testclient.ReadStream(t, js, "NR_REPLIES")
	if len(replyMsgs) != nodes*replies {
		t.Fatalf("%d replies, want %d", len(replyMsgs), nodes*replies)
	}
	for _, m := range replyMsgs {
		var n, n2, i int
		if _, err := fmt.Sscanf(m.Header.Get("Nats-Msg-Id"), "acme/n%d/r-%d-%d", &n, &n2, &i); err != nil || n != n2 {
			t.Fatalf("bad reply id %q", m.Header.Get("Nats-Msg-Id"))
		}
		if m.Subject != fmt.Sprintf("nr.org.acme.node.n%d.reply", n) || m.Header.Get("Nr-Kind") != "reply" ||
			m.Header.Get("Nr-Correlation-Data") != fmt.Sprintf("corr-%d", i) || string(m.Data) != string([]byte{0xde, 0xad, byte(i)}) {
			t.Fatalf("reply %d-%d: subject %q headers %v data %x", n, i, m.Subject, m.Header, m.Data)
		}
	}

	dlq := testclient.ReadStream(t, js, "NR_DLQ")
	if len(dlq) != 1 {
		t.Fatalf("NR_DLQ has %d messages, want 1", len(dlq))
	}
	d := dlq[0]
	if d.Subject != "nr.dlq.events" || d.Header.Get("Nr-Topic") != "org/bad.org/node/n1/events" ||
		!strings.Contains(d.Header.Get("Nr-Error"), `org id "bad.org": invalid id`) || string(d.Data) != "poison" {
		t.Fatalf("dead letter: subject %q headers %v data %q", d.Subject, d.Header, d.Data)
	}
}

// TestBackboneOutage stops the NATS server mid-stream: the workers stop
// acknowledging, the broker keeps the messages, and every event arrives
// once the server is back.
func TestBackboneOutage(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	startBridge(t, mqttConfig(mq.URL(), "outage"), ns.URL())

	const total = 3000
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-outage")
	for i := 0; i < total; i++ {
		if i == 1000 {
			ns.Shutdown()
		}
		if i == 2000 {
			time.Sleep(2 * time.Second) // outage of a few seconds with the bridge retrying
			ns.Restart()
		}
		pub.Publish(fmt.Sprintf("org/o1/node/n%d/events", i%10), fmt.Appendf(nil, "%d", i), testclient.MsgID("m-%d", i))
	}
	_, js := testclient.ConnectNATS(t, ns.URL())
	testserver.WaitFor(t, 60*time.Second, "all events after the outage", func() bool {
		return testclient.StreamCount(js, "NR_EVENTS") >= total
	})
	seen := map[string]int{}
	for _, m := range testclient.ReadStream(t, js, "NR_EVENTS") {
		seen[m.Header.Get("Nats-Msg-Id")]++
	}
	for i := 0; i < total; i++ {
		if id := fmt.Sprintf("o1/n%d/m-%d", i%10, i); seen[id] != 1 {
			t.Fatalf("event %s stored %d times, want 1", id, seen[id])
		}
	}
	// Nothing failed for itself during the outage: nothing is poison.
	if n := testclient.StreamCount(js, "NR_DLQ"); n != 0 {
		t.Fatalf("NR_DLQ has %d messages after an outage, want 0", n)
	}
}

// flakySink fails the first failures writes, then records successes.
type flakySink struct {
	mu       chan struct{}
	failures int
	attempts int
	written  []string
}

func newFlakySink(failures int) *flakySink {
	return &flakySink{mu: make(chan struct{}, 1), failures: failures}
}

func (s *flakySink) Write(_ context.Context, m *bridge.Message, done func(error)) {
	s.mu <- struct{}{}
	s.attempts++
	fail := s.attempts <= s.failures
	if !fail {
		s.written = append(s.written, string(m.Payload))
	}
	<-s.mu
	if fail {
		done(fmt.Errorf("backbone down (attempt %d)", s.attempts))
		return
	}
	done(nil)
}

func (s *flakySink) Close(context.Context) error { return nil }

func (s *flakySink) snapshot() (attempts int, written []string) {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.attempts, append([]string(nil), s.written...)
}

func runWorkers(t *testing.T, cfg *bridge.MQTTConfig, sink bridge.Sink) *bridge.Receiver {
	t.Helper()
	r := bridge.NewReceiver(cfg, sink, testLogger())
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testserver.WaitFor(t, 10*time.Second, "workers ready", func() bool { return r.Ready() == nil })
	return r
}

func stopWorkers(t *testing.T, r *bridge.Receiver, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

// TestAckAfterRetriedWrite: a sink that fails 3 times then succeeds gives
// exactly one write, and the message is acknowledged: a new connection
// with the same session gets nothing back.
func TestAckAfterRetriedWrite(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	cfg := mqttConfig(mq.URL(), "ack")
	cfg.Workers = 1
	sink := newFlakySink(3)
	r := runWorkers(t, cfg, sink)
	testclient.ConnectMQTT(t, mq.URL(), "node-ack").Publish("org/o1/node/n1/events", []byte("one"), nil)
	testserver.WaitFor(t, 10*time.Second, "the write after 3 failures", func() bool {
		_, w := sink.snapshot()
		return len(w) == 1
	})
	stopWorkers(t, r, 5*time.Second)
	if attempts, written := sink.snapshot(); attempts != 4 || len(written) != 1 || written[0] != "one" {
		t.Fatalf("attempts %d written %v, want 4 and [one]", attempts, written)
	}

	again := newFlakySink(0)
	r2 := runWorkers(t, cfg, again)
	time.Sleep(500 * time.Millisecond) // a redelivery would come right after CONNACK
	stopWorkers(t, r2, 5*time.Second)
	if attempts, _ := again.snapshot(); attempts != 0 {
		t.Fatalf("message redelivered after it was acked (%d writes)", attempts)
	}
}

// TestShutdownMidRetryDoesNotAck: a write that keeps failing is never
// acknowledged; after a shutdown the broker redelivers it to the same
// session, and a working sink then writes it.
func TestShutdownMidRetryDoesNotAck(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	cfg := mqttConfig(mq.URL(), "noack")
	cfg.Workers = 1
	down := newFlakySink(1 << 30)
	r := runWorkers(t, cfg, down)
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-noack")
	for i := 0; i < 5; i++ {
		pub.Publish("org/o1/node/n1/events", fmt.Appendf(nil, "m%d", i), nil)
	}
	testserver.WaitFor(t, 10*time.Second, "retries", func() bool {
		a, _ := down.snapshot()
		return a >= 10
	})
	stopWorkers(t, r, 500*time.Millisecond)

	up := newFlakySink(0)
	r2 := runWorkers(t, cfg, up)
	defer stopWorkers(t, r2, 5*time.Second)
	testserver.WaitFor(t, 10*time.Second, "redelivery of the 5 un-acked messages", func() bool {
		_, w := up.snapshot()
		return len(w) >= 5
	})
	_, w := up.snapshot()
	if strings.Join(w, ",") != "m0,m1,m2,m3,m4" {
		t.Fatalf("redelivered %v, want m0..m4 in order", w)
	}
}

// TestInflightBound: with the sink stalled, a worker holds at most
// MaxInflight messages, however many the broker has.
func TestInflightBound(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	cfg := mqttConfig(mq.URL(), "bound")
	cfg.Workers = 1
	cfg.MaxInflight = 20
	stall := &stallSink{release: make(chan struct{}), mu: make(chan struct{}, 1)}
	r := runWorkers(t, cfg, stall)
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-bound")
	for i := 0; i < 100; i++ {
		pub.Publish("org/o1/node/n1/events", []byte("x"), nil)
	}
	testserver.WaitFor(t, 10*time.Second, "the window to fill", func() bool { return r.Workers()[0].Inflight() == 20 })
	time.Sleep(300 * time.Millisecond)
	if n := r.Workers()[0].Inflight(); n != 20 {
		t.Fatalf("inflight %d, want the bound 20", n)
	}
	close(stall.release)
	testserver.WaitFor(t, 10*time.Second, "all 100 written", func() bool { return stall.count() == 100 })
	stopWorkers(t, r, 5*time.Second)
}

type stallSink struct {
	release chan struct{}
	mu      chan struct{}
	n       int
}

func (s *stallSink) Write(ctx context.Context, _ *bridge.Message, done func(error)) {
	go func() {
		select {
		case <-s.release:
		case <-ctx.Done():
			done(ctx.Err())
			return
		}
		s.lock()
		s.n++
		s.unlock()
		done(nil)
	}()
}

func (s *stallSink) lock() {
	if s.mu == nil {
		panic("stallSink.mu not set")
	}
	s.mu <- struct{}{}
}
func (s *stallSink) unlock()                     { <-s.mu }
func (s *stallSink) count() int                  { s.lock(); defer s.unlock(); return s.n }
func (s *stallSink) Close(context.Context) error { return nil }

// TestOversizedEventDeadLettered: an event over the NATS server's
// max_payload cannot be written; it goes to NR_DLQ cut to fit, with the
// reason and its original size, and the events beside it are unaffected.
func TestOversizedEventDeadLettered(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	startBridge(t, mqttConfig(mq.URL(), "big"), ns.URL())
	_, js := testclient.ConnectNATS(t, ns.URL())
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-big")
	big := make([]byte, 1536*1024)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	pub.Publish("org/o1/node/n1/events", []byte("before"), testclient.MsgID("before"))
	pub.Publish("org/o1/node/n1/events", big, testclient.MsgID("big"))
	pub.Publish("org/o1/node/n1/events", []byte("after"), testclient.MsgID("after"))
	testserver.WaitFor(t, 20*time.Second, "2 events and 1 dead letter", func() bool {
		return testclient.StreamCount(js, "NR_EVENTS") == 2 && testclient.StreamCount(js, "NR_DLQ") == 1
	})
	dl := testclient.ReadStream(t, js, "NR_DLQ")[0]
	if dl.Subject != "nr.dlq.events" || !strings.Contains(dl.Header.Get("Nr-Error"), "too large") ||
		dl.Header.Get("Nr-Original-Size") != fmt.Sprint(len(big)) || dl.Header.Get("Nats-Msg-Id") != "o1/n1/big" {
		t.Fatalf("dead letter subject %q headers %v", dl.Subject, dl.Header)
	}
	if len(dl.Data) == 0 || len(dl.Data) >= len(big) || string(dl.Data) != string(big[:len(dl.Data)]) {
		t.Fatalf("dead letter payload: %d bytes, want a prefix of the %d-byte original", len(dl.Data), len(big))
	}
	var got []string
	for _, m := range testclient.ReadStream(t, js, "NR_EVENTS") {
		got = append(got, string(m.Data))
	}
	if strings.Join(got, ",") != "before,after" {
		t.Fatalf("events %v", got)
	}
}

// TestDeadLettersWithFullWindow: many oversized events with a publish window
// of 1. Each failure is dead-lettered from the sink's completion path; that
// must not wait on the window it is completing (a deadlock before the fix).
func TestDeadLettersWithFullWindow(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	scfg := natsjsConfig()
	scfg.PublishWindow = 1
	cfg := mqttConfig(mq.URL(), "window")
	cfg.Workers = 1
	startBridgeWith(t, cfg, ns.URL(), scfg)
	_, js := testclient.ConnectNATS(t, ns.URL())
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-window")
	big := make([]byte, 1100*1024)
	for i := 0; i < 20; i++ {
		pub.Publish("org/o1/node/n1/events", big, testclient.MsgID("big-%d", i))
		pub.Publish("org/o1/node/n1/events", []byte("small"), testclient.MsgID("small-%d", i))
	}
	testserver.WaitFor(t, 30*time.Second, "20 events and 20 dead letters", func() bool {
		return testclient.StreamCount(js, "NR_EVENTS") == 20 && testclient.StreamCount(js, "NR_DLQ") == 20
	})
}
