package kafka_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
	"github.com/nr-bridge/nr-bridge/internal/publisher"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	kafkasource "github.com/nr-bridge/nr-bridge/sources/kafka"
)

// byCorrelation indexes received MQTT messages by correlation data.
func byCorrelation(msgs []*paho.Publish) map[string][]*paho.Publish {
	m := map[string][]*paho.Publish{}
	for _, p := range msgs {
		if p.Properties != nil {
			id := string(p.Properties.CorrelationData)
			m[id] = append(m[id], p)
		}
	}
	return m
}

func TestCommandsToMQTTAndDeadLetters(t *testing.T) {
	k, cfg := setupKafka(t)
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	agent := testclient.ConnectMQTT(t, mq.URL(), "agent", "org/acme/#")
	pub := startPublisher(t, mq.URL())
	testserver.WaitFor(t, 10*time.Second, "publisher connected", func() bool { return pub.Ready() == nil })
	startSource(t, cfg, pub, 20)

	nodeCmd := command("c-node", 300)
	broadcastCmd := command("c-all", 300)
	expired := fmt.Appendf(nil, `{"type":"reboot","version":1,"correlation_id":"c-old","issued_at":%d,"ttl_sec":10,"payload":{}}`, time.Now().Unix()-100)
	trace := kgo.RecordHeader{Key: "trace", Value: []byte("t-1")}
	recs := produce(t, producer(t, k),
		&kgo.Record{Topic: "nr.commands", Key: []byte("org/acme/node/n1"), Value: nodeCmd},
		&kgo.Record{Topic: "nr.commands", Key: []byte("org/acme/broadcast"), Value: broadcastCmd},
		&kgo.Record{Topic: "nr.commands", Key: []byte("org/acme/node/n2"), Value: []byte("not json \xff"), Headers: []kgo.RecordHeader{trace}},
		&kgo.Record{Topic: "nr.commands", Key: []byte("org/acme/node/n 2"), Value: command("c-badkey", 300)},
		&kgo.Record{Topic: "nr.commands", Key: []byte("org/acme/node/n3"), Value: expired},
	)

	testserver.WaitFor(t, 30*time.Second, "both valid commands delivered", func() bool {
		got := byCorrelation(agent.Received())
		return len(got["c-node"]) > 0 && len(got["c-all"]) > 0
	})
	got := byCorrelation(agent.Received())
	for _, tc := range []struct {
		id, topic, responseTopic string
		body                     []byte
	}{
		{"c-node", "org/acme/node/n1/cmd", "org/acme/node/n1/reply", nodeCmd},
		{"c-all", "org/acme/broadcast/cmd", "", broadcastCmd},
	} {
		p := got[tc.id][0]
		if p.Topic != tc.topic || !bytes.Equal(p.Payload, tc.body) || p.QoS != 1 || p.Retain {
			t.Errorf("%s: topic %q qos %d retain %v payload %q", tc.id, p.Topic, p.QoS, p.Retain, p.Payload)
		}
		props := p.Properties
		if props.ContentType != "application/json" || props.ResponseTopic != tc.responseTopic {
			t.Errorf("%s: content type %q, response topic %q", tc.id, props.ContentType, props.ResponseTopic)
		}
		if props.MessageExpiry == nil || *props.MessageExpiry == 0 || *props.MessageExpiry > 300 {
			t.Errorf("%s: message expiry %v, want 1..300", tc.id, props.MessageExpiry)
		}
	}

	adm := newAdmin(t, k)
	testserver.WaitFor(t, 30*time.Second, "three dead letters", func() bool { return recordCount(adm, "nr.dlq") >= 3 })
	testserver.WaitFor(t, 30*time.Second, "every offset committed", func() bool { return allCommitted(adm, kafkaconn.DefaultGroup, "nr.commands") })
	dls := readTopic(t, k, "nr.dlq", 3)
	if len(dls) != 3 {
		t.Fatalf("nr.dlq has %d records, want 3", len(dls))
	}
	wantReason := map[string]string{ // by source key
		"org/acme/node/n2":  "not a JSON object",
		"org/acme/node/n 2": "invalid id",
		"org/acme/node/n3":  "expired",
	}
	for _, dl := range dls {
		var src *kgo.Record
		for _, r := range recs {
			if bytes.Equal(r.Key, dl.Key) {
				src = r
			}
		}
		if src == nil {
			t.Fatalf("dead letter with unexpected key %q", dl.Key)
		}
		if !bytes.Equal(dl.Value, src.Value) {
			t.Errorf("%q: value %q, want %q", dl.Key, dl.Value, src.Value)
		}
		want := map[string]string{
			"Nr-Source-Topic":     "nr.commands",
			"Nr-Source-Partition": strconv.Itoa(int(src.Partition)),
			"Nr-Source-Offset":    strconv.FormatInt(src.Offset, 10),
			"Nr-Source-Key":       string(src.Key),
		}
		for hk, hv := range want {
			if got, _ := header(dl, hk); got != hv {
				t.Errorf("%q: header %s = %q, want %q", dl.Key, hk, got, hv)
			}
		}
		if reason, _ := header(dl, bridge.HeaderError); !strings.Contains(reason, wantReason[string(dl.Key)]) {
			t.Errorf("%q: Nr-Error %q, want it to mention %q", dl.Key, reason, wantReason[string(dl.Key)])
		}
		if string(dl.Key) == "org/acme/node/n2" {
			if v, _ := header(dl, "trace"); v != "t-1" {
				t.Errorf("the record's own header trace is %q, want t-1", v)
			}
		}
	}
	if n := len(byCorrelation(agent.Received())["c-badkey"]) + len(byCorrelation(agent.Received())["c-old"]); n != 0 {
		t.Fatalf("%d rejected commands reached MQTT", n)
	}
}

func TestRestartAndRebalanceSkipNothing(t *testing.T) {
	k, cfg := setupKafka(t)
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	agent := testclient.ConnectMQTT(t, mq.URL(), "agent", "org/acme/#")

	const total = 400
	var recs []*kgo.Record
	for i := 0; i < total; i++ {
		recs = append(recs, &kgo.Record{Topic: "nr.commands", Key: fmt.Appendf(nil, "org/acme/node/n%d", i%10), Value: command(fmt.Sprintf("c-%d", i), 600)})
	}
	produce(t, producer(t, k), recs...)

	distinct := func() int { return len(byCorrelation(agent.Received())) }
	adm := newAdmin(t, k)
	members := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		gs, err := adm.DescribeGroups(ctx, kafkaconn.DefaultGroup)
		if err != nil {
			return -1
		}
		g := gs[kafkaconn.DefaultGroup]
		if g.State != "Stable" {
			return -1
		}
		n := 0
		for _, m := range g.Members {
			if a, ok := m.Assigned.AsConsumer(); ok && len(a.Topics) > 0 {
				n++
			}
		}
		return n
	}
	// Slow publishing down so that the stream is still flowing while the
	// group changes.
	slow := func(clientID string) slowPublisher {
		p := startNamedPublisher(t, mq.URL(), clientID)
		testserver.WaitFor(t, 10*time.Second, "publisher connected", func() bool { return p.Ready() == nil })
		return slowPublisher{Publisher: p, delay: 10 * time.Millisecond}
	}
	first := startSource(t, cfg, slow("bridge-1"), 5)
	testserver.WaitFor(t, 30*time.Second, "first commands delivered", func() bool { return distinct() >= 30 })
	// A second member joins: the partitions are rebalanced while the
	// first is publishing.
	startSource(t, cfg, slow("bridge-2"), 5)
	testserver.WaitFor(t, 30*time.Second, "two members with partitions", func() bool { return members() == 2 })
	// The first member stops mid-stream; its partitions move over.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := first.Close(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	// And a third member replaces it (a restart).
	startSource(t, cfg, slow("bridge-3"), 5)
	if n := distinct(); n >= total {
		t.Fatalf("all %d commands were delivered before the group changed; the test proves nothing", n)
	}
	testserver.WaitFor(t, 30*time.Second, "two members with partitions again", func() bool { return members() == 2 })

	testserver.WaitFor(t, 60*time.Second, "every command delivered", func() bool { return distinct() >= total })
	testserver.WaitFor(t, 30*time.Second, "every offset committed", func() bool { return allCommitted(adm, kafkaconn.DefaultGroup, "nr.commands") })
	got := byCorrelation(agent.Received())
	dups := 0
	for i := 0; i < total; i++ {
		ps := got[fmt.Sprintf("c-%d", i)]
		if len(ps) == 0 {
			t.Fatalf("command c-%d never delivered", i)
		}
		if want := fmt.Sprintf("org/acme/node/n%d/cmd", i%10); ps[0].Topic != want {
			t.Fatalf("command c-%d on %s, want %s", i, ps[0].Topic, want)
		}
		dups += len(ps) - 1
	}
	if n := recordCount(adm, "nr.dlq"); n != 0 {
		t.Fatalf("%d dead letters, want none", n)
	}
	t.Logf("%d commands, %d delivered twice (at-least-once across restart and rebalance)", total, dups)
}

func TestRetryUntilBrokerUpOrTTLRunsOut(t *testing.T) {
	k, cfg := setupKafka(t)
	port := testserver.FreePort(t)
	brokerURL := fmt.Sprintf("tcp://127.0.0.1:%d", port)
	pub := startPublisher(t, brokerURL) // nothing listens yet
	startSource(t, cfg, pub, 10)

	recs := produce(t, producer(t, k),
		&kgo.Record{Topic: "nr.commands", Key: []byte("org/acme/node/n1"), Value: command("c-short", 2)},
		&kgo.Record{Topic: "nr.commands", Key: []byte("org/acme/node/n2"), Value: command("c-long", 600)},
	)
	adm := newAdmin(t, k)
	testserver.WaitFor(t, 30*time.Second, "short-lived command dead-lettered as expired", func() bool { return recordCount(adm, "nr.dlq") >= 1 })
	dl := readTopic(t, k, "nr.dlq", 1)[0]
	if string(dl.Key) != "org/acme/node/n1" || !bytes.Equal(dl.Value, recs[0].Value) {
		t.Fatalf("dead letter key %q value %q", dl.Key, dl.Value)
	}
	if reason, _ := header(dl, bridge.HeaderError); !strings.Contains(reason, "expired") {
		t.Fatalf("Nr-Error %q, want expired", reason)
	}
	if allCommitted(adm, kafkaconn.DefaultGroup, "nr.commands") {
		t.Fatal("the long-lived command was committed before it was published")
	}

	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Port: port})
	agent := testclient.ConnectMQTT(t, mq.URL(), "agent", "org/acme/#")
	testserver.WaitFor(t, 30*time.Second, "long-lived command delivered once the broker is up", func() bool {
		return len(byCorrelation(agent.Received())["c-long"]) > 0
	})
	testserver.WaitFor(t, 30*time.Second, "every offset committed", func() bool { return allCommitted(adm, kafkaconn.DefaultGroup, "nr.commands") })
	if n := recordCount(adm, "nr.dlq"); n != 1 {
		t.Fatalf("%d dead letters, want 1", n)
	}
}

var _ kafkasource.Intake = (*bridge.Intake)(nil)

// slowPublisher is the real publisher with a delay before each publish.
type slowPublisher struct {
	*publisher.Publisher
	delay time.Duration
}

func (p slowPublisher) Publish(ctx context.Context, t bridge.Target, c bridge.Command, source string) (bridge.PublishResult, error) {
	select {
	case <-time.After(p.delay):
	case <-ctx.Done():
		return bridge.PublishResult{}, ctx.Err()
	}
	return p.Publisher.Publish(ctx, t, c, source)
}
