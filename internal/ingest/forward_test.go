package ingest_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/ingest"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	"github.com/nr-bridge/nr-bridge/sinks/natsjs"
)

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func mqttConfig(brokerURL, clientID string) *mqttconn.Config {
	cfg := bridgetest.MQTTConfig(brokerURL, clientID)
	cfg.Workers, cfg.MaxInflight, cfg.ReconnectMax = 2, 500, time.Second
	return cfg
}

func natsjsConfig() natsjs.Config { return bridgetest.NATSSinkConfig() }

// startBridge runs a receiver with a JetStream sink, stopped at cleanup.
func startBridge(t *testing.T, cfg *mqttconn.Config, natsURL string) *ingest.Receiver {
	t.Helper()
	return startBridgeWith(t, cfg, natsURL, natsjsConfig())
}

func startBridgeWith(t *testing.T, cfg *mqttconn.Config, natsURL string, scfg natsjs.Config) *ingest.Receiver {
	t.Helper()
	r, _ := bridgetest.StartJetStreamBridge(t, cfg, natsURL, scfg, testLogger(), nil)
	testserver.WaitFor(t, 10*time.Second, "workers ready", func() bool { return r.Ready() == nil })
	return r
}

// TestForwardEventsAndReplies is docs/delivery.md's "exactly once" on NATS: every
// event and reply is stored once, and the sink published each of them once
// (a tap on the subjects counts the publishes JetStream would deduplicate
// silently). The poison message, sent after the traffic is stored, is the
// positive control: its dead letter is the sink's last publish, so once the
// tap has it every earlier publish, a second copy included, has reached it.
func TestForwardEventsAndReplies(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	nc, js := testclient.ConnectNATS(t, ns.URL())
	tap := tapPublishes(t, nc, "nr.>")
	startBridge(t, mqttConfig(mq.URL(), "fwd"), ns.URL())

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
	for n := 0; n < nodes; n++ {
		<-done
	}

	testserver.WaitFor(t, 30*time.Second, "all messages in the streams", func() bool {
		return testclient.StreamCount(js, "NR_EVENTS") >= nodes*events &&
			testclient.StreamCount(js, "NR_REPLIES") >= nodes*replies
	})
	bad := testclient.ConnectMQTT(t, mq.URL(), "bad-node")
	bad.Publish("org/bad.org/node/n1/events", []byte("poison"), nil)
	testserver.WaitFor(t, 30*time.Second, "the dead letter, in the stream and on the tap", func() bool {
		return testclient.StreamCount(js, "NR_DLQ") >= 1 && tap.subjectCount("nr.dlq.events") >= 1
	})
	if got := testclient.StreamCount(js, "NR_EVENTS"); got != nodes*events {
		t.Fatalf("NR_EVENTS has %d messages, want exactly %d", got, nodes*events)
	}
	if got := testclient.StreamCount(js, "NR_REPLIES"); got != nodes*replies {
		t.Fatalf("NR_REPLIES has %d messages, want exactly %d", got, nodes*replies)
	}
	// Exactly once on the wire too: one publish per message, none that
	// JetStream had to drop as a duplicate.
	if total, dups := tap.totals(); total != nodes*events+nodes*replies+1 || len(dups) != 0 {
		t.Fatalf("the sink published %d messages, want %d (one per message); published more than once: %v",
			total, nodes*events+nodes*replies+1, firstN(dups, 10))
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
// once the server is back. Before the outage the sink must have published
// each of the first 1,000 events exactly once (a tap counts the publishes
// JetStream would deduplicate); during the outage a publish whose PubAck
// was lost may legitimately be repeated, and the stream must still hold
// each event once.
func TestBackboneOutage(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	tapConn, js := testclient.ConnectNATS(t, ns.URL())
	tap := tapPublishes(t, tapConn, "nr.>")
	startBridge(t, mqttConfig(mq.URL(), "outage"), ns.URL())

	const total, before = 3000, 1000
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-outage")
	for i := 0; i < total; i++ {
		if i == before {
			// Positive control: the sentinel is published by the sink after
			// every event before it, so once the tap has it, a second copy
			// of any of them has reached the tap too.
			testserver.WaitFor(t, 30*time.Second, "the first events stored", func() bool {
				return testclient.StreamCount(js, "NR_EVENTS") >= before
			})
			pub.Publish("org/o1/node/sentinel/events", []byte("sentinel"), testclient.MsgID("sentinel"))
			testserver.WaitFor(t, 30*time.Second, "the sentinel on the tap", func() bool { return tap.count("o1/sentinel/sentinel") >= 1 })
			if total, dups := tap.totals(); total != before+1 || len(dups) != 0 {
				t.Fatalf("before the outage the sink published %d messages, want %d; published more than once: %v", total, before+1, firstN(dups, 10))
			}
			tapConn.Close()
			ns.Shutdown()
		}
		if i == 2000 {
			time.Sleep(2 * time.Second) // outage of a few seconds with the bridge retrying
			ns.Restart()
		}
		pub.Publish(fmt.Sprintf("org/o1/node/n%d/events", i%10), fmt.Appendf(nil, "%d", i), testclient.MsgID("m-%d", i))
	}
	_, js = testclient.ConnectNATS(t, ns.URL())
	testserver.WaitFor(t, 60*time.Second, "all events after the outage", func() bool {
		return testclient.StreamCount(js, "NR_EVENTS") >= total+1
	})
	if n := testclient.StreamCount(js, "NR_EVENTS"); n != total+1 {
		t.Fatalf("NR_EVENTS has %d messages, want %d events and the sentinel", n, total+1)
	}
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

// publishTap counts, with a core NATS subscription, every publish on the
// backbone's subjects, including the second copies JetStream drops as
// duplicates without a trace in the stream. A message is keyed by its
// Nats-Msg-Id, or by subject and payload when it has none.
type publishTap struct {
	t        testing.TB
	mu       sync.Mutex
	keys     map[string]int
	subjects map[string]int
	total    int
}

// tapPublishes subscribes nc to subject and returns the tap; the test
// fails if the subscription ever drops a message (slow consumer), since
// the counts would then be wrong.
func tapPublishes(t testing.TB, nc *nats.Conn, subject string) *publishTap {
	t.Helper()
	tp := &publishTap{t: t, keys: map[string]int{}, subjects: map[string]int{}}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		key := m.Header.Get("Nats-Msg-Id")
		if key == "" {
			key = m.Subject + "|" + string(m.Data)
		}
		tp.mu.Lock()
		tp.keys[key]++
		tp.subjects[m.Subject]++
		tp.total++
		tp.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("tap %s: %v", subject, err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatalf("tap pending limits: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("tap flush: %v", err)
	}
	t.Cleanup(func() {
		if n, err := sub.Dropped(); err == nil && n > 0 {
			t.Errorf("the publish tap dropped %d messages: its counts are not complete", n)
		}
	})
	return tp
}

// count is how many times the message keyed key was published.
func (tp *publishTap) count(key string) int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.keys[key]
}

// subjectCount is how many publishes there were on subject.
func (tp *publishTap) subjectCount(subject string) int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.subjects[subject]
}

// totals returns the number of publishes and the sorted keys published
// more than once.
func (tp *publishTap) totals() (total int, dups []string) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for k, n := range tp.keys {
		if n > 1 {
			dups = append(dups, fmt.Sprintf("%s x%d", k, n))
		}
	}
	sort.Strings(dups)
	return tp.total, dups
}

// firstN is at most n of s, for a failure message.
func firstN(s []string, n int) []string { return s[:min(n, len(s))] }

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

func runWorkers(t *testing.T, cfg *mqttconn.Config, sink bridge.Sink) *ingest.Receiver {
	t.Helper()
	r := ingest.NewReceiver(cfg, sink, testLogger(), nil)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testserver.WaitFor(t, 10*time.Second, "workers ready", func() bool { return r.Ready() == nil })
	return r
}

func stopWorkers(t *testing.T, r *ingest.Receiver, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := r.Close(ctx); err != nil {
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

	// Positive control: the broker resends a session's un-acked messages
	// first, so with one worker "one" would be written before "sentinel",
	// published after the reconnect.
	again := newFlakySink(0)
	r2 := runWorkers(t, cfg, again)
	testclient.ConnectMQTT(t, mq.URL(), "node-ack-2").Publish("org/o1/node/n1/events", []byte("sentinel"), nil)
	testserver.WaitFor(t, 10*time.Second, "the sentinel written", func() bool {
		_, w := again.snapshot()
		return len(w) > 0 && w[len(w)-1] == "sentinel"
	})
	stopWorkers(t, r2, 5*time.Second)
	if attempts, written := again.snapshot(); attempts != 1 || len(written) != 1 {
		t.Fatalf("message redelivered after it was acked: %d writes %v, want only the sentinel", attempts, written)
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
	close(stall.release)
	testserver.WaitFor(t, 10*time.Second, "all 100 written", func() bool { return stall.count() == 100 })
	stopWorkers(t, r, 5*time.Second)
	// The high-water mark covers the whole run: no sleep needed to see a
	// 21st message handed to the sink while 20 were held.
	if m := stall.maxHeld(); m != 20 {
		t.Fatalf("the sink held up to %d writes at once, want the bound 20", m)
	}
}

type stallSink struct {
	release chan struct{}
	mu      chan struct{}
	n       int
	held    int // writes given and not completed
	maxH    int // the most held at once
}

func (s *stallSink) Write(ctx context.Context, _ *bridge.Message, done func(error)) {
	s.lock()
	s.held++
	s.maxH = max(s.maxH, s.held)
	s.unlock()
	done = func(inner func(error)) func(error) {
		return func(err error) {
			s.lock()
			s.held--
			s.unlock()
			inner(err)
		}
	}(done)
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
func (s *stallSink) maxHeld() int                { s.lock(); defer s.unlock(); return s.maxH }
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
