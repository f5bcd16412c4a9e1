package natsjs_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/internal/publisher"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	sinknatsjs "github.com/nr-bridge/nr-bridge/sinks/natsjs"
	"github.com/nr-bridge/nr-bridge/sources/natsjs"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewJSONHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func mqttConfig(brokerURL, clientID string) *mqttconn.Config {
	cfg := bridgetest.MQTTConfig(brokerURL, clientID)
	cfg.AckInterval = 10 * time.Millisecond
	return cfg
}

func streamsConfig() sinknatsjs.Config {
	return sinknatsjs.Config{Streams: natsconn.Streams{SubjectPrefix: "nr", DLQStream: "NR_DLQ", ManageStreams: true, Replicas: 1, MaxAge: time.Hour, DuplicateWindow: time.Minute}, EventsStream: "NR_EVENTS", RepliesStream: "NR_REPLIES", PublishWindow: 100, AckTimeout: 5 * time.Second}
}

func sourceConfig() natsjs.Config {
	return natsjs.Config{
		Stream:        "NR_COMMANDS",
		Consumer:      "nr-bridge",
		Concurrency:   16,
		AckWait:       30 * time.Second,
		MaxAckPending: 1000,
		RetryMin:      100 * time.Millisecond,
		RetryMax:      500 * time.Millisecond,
	}
}

// countingPublisher counts the commands a replica published.
type countingPublisher struct {
	*publisher.Publisher
	published atomic.Int64
	org       string // ORG_ID of its intake
}

func (p *countingPublisher) Publish(ctx context.Context, t bridge.Target, c bridge.Command, source string) (bridge.PublishResult, error) {
	res, err := p.Publisher.Publish(ctx, t, c, source)
	if err == nil {
		p.published.Add(1)
	}
	return res, err
}

// replica is one bridge's command path: its own NATS connection, sink
// (which sets up NR_DLQ), publisher and source.
type replica struct {
	pub *countingPublisher
	src *natsjs.Source
}

func startReplica(t *testing.T, natsURL string, mqtt *mqttconn.Config) *replica {
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
	pub := &countingPublisher{Publisher: publisher.New(mqtt, log, nil)}
	if err := pub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	src := natsjs.New(mustJetStream(t, nc), sourceConfig(), streamsConfig().Streams, intakeOf(pub), log)
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Shutdown in the bridge's order: source, publisher, sink, connection.
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
	return &replica{pub: pub, src: src}
}

// subscriber records what arrives on org/#. Its session outlives a broker
// restart (with Mosquitto persistence), so commands published while it is
// reconnecting are queued for it, not lost.
type subscriber struct {
	mu  sync.Mutex
	got []*paho.Publish
}

func subscribe(t *testing.T, brokerURL, clientID string) *subscriber {
	t.Helper()
	u, _ := url.Parse(brokerURL)
	s := &subscriber{}
	ctx, cancel := context.WithCancel(context.Background())
	subscribed := make(chan struct{}, 1)
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		SessionExpiryInterval:         600,
		ReconnectBackoff:              func(int) time.Duration { return 100 * time.Millisecond },
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			go func() {
				sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
				defer scancel()
				if _, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "org/#", QoS: 1}}}); err == nil {
					select {
					case subscribed <- struct{}{}:
					default:
					}
				}
			}()
		},
		ClientConfig: paho.ClientConfig{
			ClientID: clientID,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				s.mu.Lock()
				s.got = append(s.got, pr.Packet)
				s.mu.Unlock()
				return true, nil
			}},
		},
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		_ = cm.Disconnect(dctx)
		cancel()
	})
	select {
	case <-subscribed:
	case <-time.After(10 * time.Second):
		t.Fatal("subscriber: not subscribed after 10s")
	}
	return s
}

func (s *subscriber) received() []*paho.Publish {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*paho.Publish(nil), s.got...)
}

func command(corr string, issuedAt int64, ttl int) []byte {
	return fmt.Appendf(nil, `{"type":"reboot","version":1,"correlation_id":%q,"issued_at":%d,"ttl_sec":%d,"payload":{"delay": 5}}`, corr, issuedAt, ttl)
}

func publish(t *testing.T, js jetstream.JetStream, subject string, body []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, subject, body); err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
}

func TestSourceDeliversNodeAndBroadcast(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	sub := subscribe(t, broker.URL(), "sub")
	startReplica(t, ns.URL(), mqttConfig(broker.URL(), "bridge-a"))
	_, js := testclient.ConnectNATS(t, ns.URL())

	now := time.Now().Unix()
	node := command("c-node", now, 60)
	bcast := command("c-bcast", now, 600)
	publish(t, js, "nr.org.o1.node.n1.cmd", node)
	publish(t, js, "nr.org.o1.broadcast.cmd", bcast)

	testserver.WaitFor(t, 10*time.Second, "2 commands", func() bool { return len(sub.received()) >= 2 })
	byCorr := map[string]*paho.Publish{}
	for _, m := range sub.received() {
		byCorr[string(m.Properties.CorrelationData)] = m
	}
	for _, w := range []struct {
		corr, topic, response string
		body                  []byte
		ttl                   uint32
	}{
		{"c-node", "org/o1/node/n1/cmd", "org/o1/node/n1/reply", node, 60},
		{"c-bcast", "org/o1/broadcast/cmd", "", bcast, 600},
	} {
		m := byCorr[w.corr]
		if m == nil {
			t.Fatalf("%s not received", w.corr)
		}
		p := m.Properties
		if m.Topic != w.topic || m.QoS != 1 || m.Retain || !bytes.Equal(m.Payload, w.body) ||
			p.ContentType != "application/json" || p.ResponseTopic != w.response {
			t.Errorf("%s: topic %q qos %d retain %v payload %q content type %q response topic %q; want %q qos 1 %q application/json %q",
				w.corr, m.Topic, m.QoS, m.Retain, m.Payload, p.ContentType, p.ResponseTopic, w.topic, w.body, w.response)
		}
		if p.MessageExpiry == nil || *p.MessageExpiry > w.ttl || *p.MessageExpiry < w.ttl-5 {
			t.Errorf("%s: message expiry %v, want about %d", w.corr, p.MessageExpiry, w.ttl)
		}
	}
	if n := len(sub.received()); n != 2 {
		t.Errorf("received %d messages, want 2", n)
	}
	testserver.WaitFor(t, 10*time.Second, "NR_COMMANDS empty (acked)", func() bool { return testclient.StreamCount(js, "NR_COMMANDS") == 0 })
	if n := testclient.StreamCount(js, "NR_DLQ"); n != 0 {
		t.Errorf("NR_DLQ has %d messages, want 0", n)
	}
}

func TestSourceDeadLetters(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	sub := subscribe(t, broker.URL(), "sub")
	cfg := mqttConfig(broker.URL(), "bridge-a")
	cfg.OrgID = "o1"
	startReplica(t, ns.URL(), cfg)
	_, js := testclient.ConnectNATS(t, ns.URL())

	now := time.Now().Unix()
	invalid := []byte(`{"type":"reboot","version":1,"correlation_id":"c-inv","issued_at":` + fmt.Sprint(now) + `,"ttl_sec":"60","payload":{}}`)
	expired := command("c-exp", now-120, 60)
	notJSON := []byte("reboot please\n")
	cases := []struct {
		subject   string
		body      []byte
		wantError string // exact, or a prefix when it ends in "..."
	}{
		{"nr.org.o1.node.n1.cmd", invalid, "ttl_sec: must be an integer between 1 and 86400"},
		{"nr.org.o1.node.n2.cmd", expired, fmt.Sprintf("command expired at %s (issued_at %d + ttl_sec 60), ...", time.Unix(now-60, 0).UTC().Format(time.RFC3339), now-120)},
		{"nr.org.o1.broadcast.cmd", notJSON, "not a JSON object: invalid character 'r' looking for beginning of value"},
		{"nr.org.o$1.node.n1.cmd", command("c-id", now, 60), `subject "nr.org.o$1.node.n1.cmd": org id "o$1": must be 1 to 64 characters of A-Z a-z 0-9 _ -: invalid id`},
		{"nr.org.o2.node.n1.cmd", command("c-scope", now, 60), `publish org/o2/node/n1/cmd: org "o2": command outside the bridge's ORG_ID "o1"`},
	}
	for _, c := range cases {
		publish(t, js, c.subject, c.body)
	}
	testserver.WaitFor(t, 10*time.Second, "5 dead letters", func() bool { return testclient.StreamCount(js, "NR_DLQ") >= len(cases) })
	dlq := testclient.ReadStream(t, js, "NR_DLQ")
	if len(dlq) != len(cases) {
		t.Fatalf("NR_DLQ has %d messages, want %d", len(dlq), len(cases))
	}
	bySubject := map[string]testclient.StreamMsg{}
	for _, m := range dlq {
		if m.Subject != "nr.dlq.cmd" {
			t.Errorf("dead letter on %q, want nr.dlq.cmd", m.Subject)
		}
		bySubject[m.Header.Get(bridge.HeaderSubject)] = m
	}
	for _, c := range cases {
		m, ok := bySubject[c.subject]
		if !ok {
			t.Errorf("no dead letter with Nr-Subject %q", c.subject)
			continue
		}
		if !bytes.Equal(m.Data, c.body) {
			t.Errorf("%s: dead letter payload %q, want %q unchanged", c.subject, m.Data, c.body)
		}
		got := m.Header.Get(bridge.HeaderError)
		if prefix, ok := strings.CutSuffix(c.wantError, "..."); ok {
			if !strings.HasPrefix(got, prefix) {
				t.Errorf("%s: Nr-Error %q, want it to start with %q", c.subject, got, prefix)
			}
		} else if got != c.wantError {
			t.Errorf("%s: Nr-Error %q, want %q", c.subject, got, c.wantError)
		}
		if r := m.Header.Get(bridge.HeaderReason); len(m.Header) != 3 || r == bridge.ReasonOther || !slices.Contains(bridge.Reasons, r) {
			t.Errorf("%s: headers %v, want only Nr-Reason (a known reason), Nr-Error and Nr-Subject", c.subject, m.Header)
		}
	}
	testserver.WaitFor(t, 10*time.Second, "NR_COMMANDS empty (terminated)", func() bool { return testclient.StreamCount(js, "NR_COMMANDS") == 0 })

	// Nothing reached MQTT: the next valid command is the first message.
	publish(t, js, "nr.org.o1.node.n1.cmd", command("sentinel", time.Now().Unix(), 60))
	testserver.WaitFor(t, 10*time.Second, "the sentinel", func() bool { return len(sub.received()) > 0 })
	if got := sub.received(); len(got) != 1 || string(got[0].Properties.CorrelationData) != "sentinel" {
		t.Fatalf("subscriber got %d messages (first %q), want only the sentinel", len(got), got[0].Properties.CorrelationData)
	}
}

func TestSourceWaitsForTheBroker(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	sub := subscribe(t, broker.URL(), "sub")
	r := startReplica(t, ns.URL(), mqttConfig(broker.URL(), "bridge-a"))
	_, js := testclient.ConnectNATS(t, ns.URL())

	broker.Stop()
	testserver.WaitFor(t, 10*time.Second, "publisher sees the broker down", func() bool { return r.pub.Ready() != nil })
	now := time.Now().Unix()
	publish(t, js, "nr.org.o1.node.n1.cmd", command("c-wait", now, 120))
	// One whose TTL runs out during the outage is dead-lettered as expired.
	short := command("c-short", now, 1)
	publish(t, js, "nr.org.o1.node.n2.cmd", short)

	consumer, err := js.Consumer(context.Background(), "NR_COMMANDS", "nr-bridge")
	if err != nil {
		t.Fatal(err)
	}
	testserver.WaitFor(t, 10*time.Second, "retries while the broker is down", func() bool {
		info, err := consumer.Info(context.Background())
		return err == nil && info.NumRedelivered > 0 && info.Delivered.Consumer >= 4
	})
	testserver.WaitFor(t, 10*time.Second, "the short command dead-lettered", func() bool { return testclient.StreamCount(js, "NR_DLQ") == 1 })
	dlq := testclient.ReadStream(t, js, "NR_DLQ")
	if h := dlq[0].Header; h.Get(bridge.HeaderSubject) != "nr.org.o1.node.n2.cmd" || !bytes.Equal(dlq[0].Data, short) ||
		!strings.HasPrefix(h.Get(bridge.HeaderError), fmt.Sprintf("command expired at %s (issued_at %d + ttl_sec 1)", time.Unix(now+1, 0).UTC().Format(time.RFC3339), now)) {
		t.Fatalf("dead letter %q %v, want the short command, expired", dlq[0].Data, h)
	}
	if n := len(sub.received()); n != 0 {
		t.Fatalf("received %d messages while the broker was down", n)
	}

	broker.Restart()
	testserver.WaitFor(t, 20*time.Second, "the command after the restart", func() bool { return len(sub.received()) > 0 })
	got := sub.received()
	if len(got) != 1 || got[0].Topic != "org/o1/node/n1/cmd" || string(got[0].Properties.CorrelationData) != "c-wait" {
		t.Fatalf("received %d messages (first on %q), want c-wait on org/o1/node/n1/cmd", len(got), got[0].Topic)
	}
	testserver.WaitFor(t, 10*time.Second, "NR_COMMANDS empty", func() bool { return testclient.StreamCount(js, "NR_COMMANDS") == 0 })
	if n := testclient.StreamCount(js, "NR_DLQ"); n != 1 {
		t.Fatalf("NR_DLQ has %d messages, want only the short command", n)
	}
}

func TestTwoReplicasShareTheStream(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	sub := subscribe(t, broker.URL(), "sub")
	a := startReplica(t, ns.URL(), mqttConfig(broker.URL(), "bridge-a"))
	b := startReplica(t, ns.URL(), mqttConfig(broker.URL(), "bridge-b"))
	_, js := testclient.ConnectNATS(t, ns.URL())

	const n = 1000
	now := time.Now().Unix()
	var futures []jetstream.PubAckFuture
	for i := range n {
		f, err := js.PublishMsgAsync(&nats.Msg{
			Subject: fmt.Sprintf("nr.org.o1.node.n%d.cmd", i%10),
			Data:    command(fmt.Sprintf("c-%d", i), now, 300),
		})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatalf("publish %d: %v", i, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("publish %d: no PubAck", i)
		}
	}

	distinct := func() (map[string]int, int) {
		seen := map[string]int{}
		got := sub.received()
		for _, m := range got {
			seen[string(m.Properties.CorrelationData)]++
		}
		return seen, len(got)
	}
	testserver.WaitFor(t, 60*time.Second, "1000 distinct commands", func() bool {
		seen, _ := distinct()
		return len(seen) >= n
	})
	testserver.WaitFor(t, 10*time.Second, "NR_COMMANDS empty", func() bool { return testclient.StreamCount(js, "NR_COMMANDS") == 0 })
	seen, total := distinct()
	dups := 0
	for corr, k := range seen {
		if k > 1 {
			dups += k - 1
			t.Logf("duplicate: %s delivered %d times", corr, k)
		}
	}
	t.Logf("replica a published %d, replica b %d; received %d, distinct %d, duplicates %d",
		a.pub.published.Load(), b.pub.published.Load(), total, len(seen), dups)
	if len(seen) != n {
		t.Fatalf("distinct commands %d, want %d", len(seen), n)
	}
	for i := range n {
		if seen[fmt.Sprintf("c-%d", i)] == 0 {
			t.Fatalf("c-%d never delivered", i)
		}
	}
	if a.pub.published.Load() == 0 || b.pub.published.Load() == 0 {
		t.Errorf("one replica published nothing (a %d, b %d): the consumer is not shared", a.pub.published.Load(), b.pub.published.Load())
	}
	if got := a.pub.published.Load() + b.pub.published.Load(); got != int64(total) {
		t.Errorf("replicas published %d, subscriber received %d", got, total)
	}
	if n := testclient.StreamCount(js, "NR_DLQ"); n != 0 {
		t.Errorf("NR_DLQ has %d messages, want 0", n)
	}
}

func TestSourceStopKeepsCommands(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	r := startReplica(t, ns.URL(), mqttConfig(broker.URL(), "bridge-a"))
	_, js := testclient.ConnectNATS(t, ns.URL())

	broker.Stop()
	testserver.WaitFor(t, 10*time.Second, "publisher sees the broker down", func() bool { return r.pub.Ready() != nil })
	now := time.Now().Unix()
	for i := range 3 {
		publish(t, js, fmt.Sprintf("nr.org.o1.node.n%d.cmd", i), command(fmt.Sprintf("c-%d", i), now, 300))
	}
	consumer, err := js.Consumer(context.Background(), "NR_COMMANDS", "nr-bridge")
	if err != nil {
		t.Fatal(err)
	}
	testserver.WaitFor(t, 10*time.Second, "retries while the broker is down", func() bool {
		info, err := consumer.Info(context.Background())
		return err == nil && info.NumRedelivered >= 3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.src.Close(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if n := testclient.StreamCount(js, "NR_COMMANDS"); n != 3 {
		t.Fatalf("NR_COMMANDS has %d messages after Stop, want the 3 unpublished ones", n)
	}
	if n := testclient.StreamCount(js, "NR_DLQ"); n != 0 {
		t.Fatalf("NR_DLQ has %d messages, want 0", n)
	}

	// Another replica publishes them once the broker is back.
	broker.Restart()
	sub := subscribe(t, broker.URL(), "sub")
	startReplica(t, ns.URL(), mqttConfig(broker.URL(), "bridge-b"))
	testserver.WaitFor(t, 20*time.Second, "3 commands", func() bool { return len(sub.received()) >= 3 })
	testserver.WaitFor(t, 10*time.Second, "NR_COMMANDS empty", func() bool { return testclient.StreamCount(js, "NR_COMMANDS") == 0 })
}

func (p *countingPublisher) scope() string { return p.org }

// mustJetStream is a JetStream context on nc, as the bridge gives the
// commands source.
func mustJetStream(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := natsconn.JetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// intakeOf is the intake of pub, as the bridge builds it: scoped to the
// test's ORG_ID (scope), counting through the test's metrics
// (intakeMetrics) when pub has them.
func intakeOf(pub bridge.Publisher) *bridge.Intake {
	orgID := ""
	var m bridge.IntakeMetrics
	if sp, ok := pub.(interface{ scope() string }); ok {
		orgID = sp.scope()
	}
	if mp, ok := pub.(interface{ intakeMetrics() bridge.IntakeMetrics }); ok {
		m = mp.intakeMetrics()
	}
	return bridge.NewIntake(pub, bridge.DefaultCommandLimits(), orgID, m)
}
