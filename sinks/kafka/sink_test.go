package kafka_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// payload is event or reply i of node n: a sequence number, then bytes that
// are not UTF-8, so that byte-for-byte means something.
func payload(kind string, n, i int) []byte {
	return append(fmt.Appendf(nil, "%s/n%d/%05d/", kind, n, i), 0x00, 0xff, 0xfe, byte(i))
}

func seqOf(t *testing.T, value []byte) (kind string, n, i int) {
	t.Helper()
	parts := strings.SplitN(string(value), "/", 4)
	if len(parts) != 4 {
		t.Fatalf("unexpected value %q", value)
	}
	n, err1 := strconv.Atoi(strings.TrimPrefix(parts[1], "n"))
	i, err2 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil {
		t.Fatalf("unexpected value %q", value)
	}
	return parts[0], n, i
}

func headerKeys(r *kgo.Record) []string {
	var ks []string
	for _, h := range r.Headers {
		ks = append(ks, h.Key)
	}
	return ks
}

func TestForwardEventsAndReplies(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	conn := kafkaConfig(t, k, nil)
	sink := startSink(t, conn, 256)
	startReceiver(t, mqttConfig(mq.URL(), "fwd", 1), sink)
	_, adm := adminClient(t, k)

	const nodes, events, replies = 2, 1000, 100
	sendEvent := func(pub *testclient.MQTT, n, i int) error {
		props := testclient.Props("msg_id", fmt.Sprintf("e-%d-%d", n, i), "fw", "1.2")
		props.ContentType = "application/octet-stream"
		return pub.TryPublish(fmt.Sprintf("org/acme/node/n%d/events", n), payload("events", n, i), props)
	}
	sendReply := func(pub *testclient.MQTT, n, i int) error {
		rp := testclient.Props("msg_id", fmt.Sprintf("r-%d-%d", n, i))
		rp.CorrelationData = fmt.Appendf(nil, "corr-%d", i)
		return pub.TryPublish(fmt.Sprintf("org/acme/node/n%d/reply", n), payload("reply", n, i), rp)
	}
	pubs := make([]*testclient.MQTT, nodes)
	var wg sync.WaitGroup
	for n := 0; n < nodes; n++ {
		pub := testclient.ConnectMQTT(t, mq.URL(), fmt.Sprintf("node-%d", n))
		pubs[n] = pub
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < events; i++ {
				if err := sendEvent(pub, n, i); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
				if i < replies {
					if err := sendReply(pub, n, i); err != nil {
						t.Errorf("publish: %v", err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()

	testserver.WaitFor(t, 60*time.Second, "all records in the topics", func() bool {
		return recordCount(adm, "nr.events") >= nodes*events && recordCount(adm, "nr.replies") >= nodes*replies
	})
	// Positive control instead of a pause for a stray duplicate: one more
	// event and reply per node, the sentinels. The sink produces a node's
	// records in order on its partition, so once each sentinel is there a
	// second copy of any earlier record is there too; check then counts
	// exactly, sentinels included.
	for n := 0; n < nodes; n++ {
		if err := sendEvent(pubs[n], n, events); err != nil {
			t.Fatalf("publish sentinel: %v", err)
		}
		if err := sendReply(pubs[n], n, replies); err != nil {
			t.Fatalf("publish sentinel: %v", err)
		}
	}
	sentinelsIn := func(topic, kind string, last int) bool {
		if recordCount(adm, topic) < nodes*(last+1) {
			return false
		}
		seen := map[int]bool{}
		for _, r := range readTopic(t, k, topic, nodes*(last+1)) {
			if gotKind, n, i := seqOf(t, r.Value); gotKind == kind && i == last {
				seen[n] = true
			}
		}
		return len(seen) == nodes
	}
	testserver.WaitFor(t, 60*time.Second, "the sentinels in the topics", func() bool {
		return sentinelsIn("nr.events", "events", events) && sentinelsIn("nr.replies", "reply", replies)
	})
	if got := recordCount(adm, "nr.events"); got != nodes*(events+1) {
		t.Fatalf("nr.events has %d records, want exactly %d", got, nodes*(events+1))
	}
	if got := recordCount(adm, "nr.replies"); got != nodes*(replies+1) {
		t.Fatalf("nr.replies has %d records, want exactly %d", got, nodes*(replies+1))
	}
	if got := recordCount(adm, "nr.dlq"); got != 0 {
		t.Fatalf("nr.dlq has %d records, want 0", got)
	}

	check := func(topic, kind string, want int) {
		recs := readTopic(t, k, topic, want)
		next := map[int]int{} // node -> next sequence number, in partition order
		for _, r := range recs {
			gotKind, n, i := seqOf(t, r.Value)
			if gotKind != kind {
				t.Fatalf("%s: record of kind %s: %q", topic, gotKind, r.Value)
			}
			if i != next[n] {
				t.Fatalf("%s: node n%d: got sequence %d, want %d (order per key broken or a record lost)", topic, n, i, next[n])
			}
			next[n]++
			if !bytes.Equal(r.Value, payload(kind, n, i)) {
				t.Fatalf("%s: value %q, want %q", topic, r.Value, payload(kind, n, i))
			}
			if want := fmt.Sprintf("org/acme/node/n%d", n); string(r.Key) != want {
				t.Fatalf("%s: key %q, want %q", topic, r.Key, want)
			}
			wantKeys := []string{"Nr-Topic", "Nr-Org", "Nr-Node", "Nr-Kind", "Nr-Received-At", "Content-Type", "fw", "Nr-Msg-Id"}
			wantHeaders := map[string]string{
				"Nr-Topic": fmt.Sprintf("org/acme/node/n%d/%s", n, kind), "Nr-Org": "acme", "Nr-Node": fmt.Sprintf("n%d", n),
				"Nr-Kind": kind, "Content-Type": "application/octet-stream", "fw": "1.2", "Nr-Msg-Id": fmt.Sprintf("acme/n%d/e-%d-%d", n, n, i),
			}
			if kind == "reply" {
				wantKeys = []string{"Nr-Topic", "Nr-Org", "Nr-Node", "Nr-Kind", "Nr-Received-At", "Nr-Correlation-Data", "Nr-Msg-Id"}
				wantHeaders = map[string]string{
					"Nr-Topic": fmt.Sprintf("org/acme/node/n%d/reply", n), "Nr-Org": "acme", "Nr-Node": fmt.Sprintf("n%d", n),
					"Nr-Kind": "reply", "Nr-Correlation-Data": fmt.Sprintf("corr-%d", i), "Nr-Msg-Id": fmt.Sprintf("acme/n%d/r-%d-%d", n, n, i),
				}
			}
			if got := headerKeys(r); !slices.Equal(got, wantKeys) {
				t.Fatalf("%s: headers %v, want %v", topic, got, wantKeys)
			}
			for hk, hv := range wantHeaders {
				if got, _ := header(r, hk); got != hv {
					t.Fatalf("%s: header %s = %q, want %q", topic, hk, got, hv)
				}
			}
			at, _ := header(r, "Nr-Received-At")
			ts, err := time.Parse(time.RFC3339Nano, at)
			if err != nil || ts.Location() != time.UTC || time.Since(ts) > 5*time.Minute {
				t.Fatalf("%s: Nr-Received-At %q: not a recent RFC 3339 UTC time (%v)", topic, at, err)
			}
		}
		for n := 0; n < nodes; n++ {
			if next[n] != want/nodes {
				t.Fatalf("%s: node n%d: %d records, want %d", topic, n, next[n], want/nodes)
			}
		}
	}
	check("nr.events", "events", nodes*(events+1))
	check("nr.replies", "reply", nodes*(replies+1))
}

func TestKafkaOutageLosesNothing(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	conn := kafkaConfig(t, k, nil)
	sink := startSink(t, conn, 64)
	startReceiver(t, mqttConfig(mq.URL(), "outage", 2), sink)
	_, adm := adminClient(t, k)
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-0")

	const before, during, after = 200, 300, 200
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			pub.Publish("org/acme/node/n0/events", payload("events", 0, i), testclient.MsgID("e-%d", i))
		}
	}
	publish(0, before)
	testserver.WaitFor(t, 30*time.Second, "first events written", func() bool { return recordCount(adm, "nr.events") >= before })

	k.Close()
	testserver.WaitFor(t, 20*time.Second, "sink reports Kafka down", func() bool { return sink.Ready() != nil })
	publish(before, before+during)
	time.Sleep(2 * time.Second) // keep Kafka down while the workers hold and retry
	k.Restart()
	testserver.WaitFor(t, 20*time.Second, "sink reports Kafka up", func() bool { return sink.Ready() == nil })
	publish(before+during, before+during+after)

	const total = before + during + after
	testserver.WaitFor(t, 60*time.Second, "every event written", func() bool {
		return recordCount(adm, "nr.events") >= total
	})
	seen := map[int]int{}
	for _, r := range readTopic(t, k, "nr.events", total) {
		_, _, i := seqOf(t, r.Value)
		if !bytes.Equal(r.Value, payload("events", 0, i)) {
			t.Fatalf("value %q, want %q", r.Value, payload("events", 0, i))
		}
		seen[i]++
	}
	dups := 0
	for i := 0; i < total; i++ {
		switch c := seen[i]; {
		case c == 0:
			t.Fatalf("event %d lost", i)
		case c > 1:
			dups += c - 1
		}
	}
	t.Logf("%d events, %d duplicates (at-least-once across the outage)", total, dups)
	// Nothing failed for itself during the outage: nothing is poison.
	if n := recordCount(adm, "nr.dlq"); n != 0 {
		t.Fatalf("nr.dlq has %d records after an outage, want 0", n)
	}
}

func TestDeadLetters(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	conn := kafkaConfig(t, k, map[string]string{"KAFKA_MAX_MESSAGE_BYTES": "65536"})
	sink := startSink(t, conn, 64)
	startReceiver(t, mqttConfig(mq.URL(), "dlq", 1), sink)
	_, adm := adminClient(t, k)
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-0")

	big := bytes.Repeat([]byte{0xab, 0x00}, 50_000) // 100,000 bytes
	pub.Publish("org/acme/node/n1/events", big, testclient.MsgID("big-1"))
	pub.Publish("org/bad.org/node/n1/events", []byte("poison"), nil)
	pub.Publish("org/acme/node/n1/events", []byte("small"), nil)

	testserver.WaitFor(t, 30*time.Second, "dead letters and the small event", func() bool {
		return recordCount(adm, "nr.dlq") >= 2 && recordCount(adm, "nr.events") >= 1
	})
	if got := recordCount(adm, "nr.events"); got != 1 {
		t.Fatalf("nr.events has %d records, want only the small one", got)
	}
	recs := readTopic(t, k, "nr.dlq", 2)
	if len(recs) != 2 {
		t.Fatalf("nr.dlq has %d records, want 2", len(recs))
	}
	byTopic := map[string]*kgo.Record{}
	for _, r := range recs {
		topic, _ := header(r, bridge.HeaderTopic)
		byTopic[topic] = r
	}

	r := byTopic["org/acme/node/n1/events"]
	if r == nil {
		t.Fatalf("no dead letter for the oversized event; got %v", byTopic)
	}
	if string(r.Key) != "org/acme/node/n1" {
		t.Errorf("oversized: key %q", r.Key)
	}
	if reason, _ := header(r, bridge.HeaderError); !strings.Contains(reason, "too large") {
		t.Errorf("oversized: Nr-Error %q, want it to say too large", reason)
	}
	if size, _ := header(r, "Nr-Original-Size"); size != "100000" {
		t.Errorf("oversized: Nr-Original-Size %q, want 100000", size)
	}
	if id, _ := header(r, "Nr-Msg-Id"); id != "acme/n1/big-1" {
		t.Errorf("oversized: Nr-Msg-Id %q", id)
	}
	if len(r.Value) == 0 || len(r.Value) >= 65536 || !bytes.Equal(r.Value, big[:len(r.Value)]) {
		t.Errorf("oversized: value of %d bytes is not a prefix of the payload cut below 65536", len(r.Value))
	}

	r = byTopic["org/bad.org/node/n1/events"]
	if r == nil {
		t.Fatalf("no dead letter for the invalid ID; got %v", byTopic)
	}
	if string(r.Key) != "org/bad.org/node/n1" || string(r.Value) != "poison" {
		t.Errorf("invalid id: key %q value %q", r.Key, r.Value)
	}
	if reason, _ := header(r, bridge.HeaderError); !strings.Contains(reason, "invalid id") {
		t.Errorf("invalid id: Nr-Error %q", reason)
	}
}

func TestCloseFlushesAndRefusesLaterWrites(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	conn := kafkaConfig(t, k, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sink := startSink(t, conn, 16)
	_, adm := adminClient(t, k)

	const n = 100
	results := make(chan error, n+1)
	for i := 0; i < n; i++ {
		m := bridge.NewMessage("org/acme/node/n1/events", payload("events", 1, i), time.Now(), "", nil, nil)
		sink.Write(ctx, m, func(err error) { results <- err })
	}
	if err := sink.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	for i := 0; i < n; i++ {
		if err := <-results; err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if got := recordCount(adm, "nr.events"); got != n {
		t.Fatalf("nr.events has %d records after Close, want %d", got, n)
	}
	m := bridge.NewMessage("org/acme/node/n1/events", []byte("late"), time.Now(), "", nil, nil)
	sink.Write(ctx, m, func(err error) { results <- err })
	if err := <-results; err == nil || !strings.Contains(err.Error(), bridge.ErrClosed.Error()) {
		t.Fatalf("write after close: %v, want ErrClosed", err)
	}
}

func TestCloseWhileKafkaDownFailsPendingWrites(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	conn := kafkaConfig(t, k, nil)
	sink := startSink(t, conn, 16)
	testserver.WaitFor(t, 10*time.Second, "sink ready", func() bool { return sink.Ready() == nil })
	k.Close()

	const n = 10
	results := make(chan error, n)
	for i := 0; i < n; i++ {
		m := bridge.NewMessage("org/acme/node/n1/events", payload("events", 1, i), time.Now(), "", nil, nil)
		sink.Write(context.Background(), m, func(err error) { results <- err })
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := sink.Close(ctx); err == nil {
		t.Fatal("Close with Kafka down: no error, want the flush deadline")
	}
	// Every write got its outcome, an error: none is acknowledged, so MQTT
	// redelivers them.
	for i := 0; i < n; i++ {
		if err := <-results; err == nil {
			t.Fatalf("write %d reported written while Kafka was down", i)
		}
	}
}

// TestDeadLettersWithFullWindow dead-letters many messages from the
// worker's done callback while the window is full, which must not
// deadlock: dead letters are written from the sink's completion goroutine.
func TestDeadLettersWithFullWindow(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	conn := kafkaConfig(t, k, map[string]string{"KAFKA_MAX_MESSAGE_BYTES": "65536"})
	sink := startSink(t, conn, 2)
	startReceiver(t, mqttConfig(mq.URL(), "fullwin", 2), sink)
	_, adm := adminClient(t, k)
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-0")

	const n = 200
	for i := 0; i < n; i++ {
		body := payload("events", 0, i)
		if i%2 == 1 {
			body = append(body, bytes.Repeat([]byte{'x'}, 70_000)...)
		}
		pub.Publish("org/acme/node/n0/events", body, testclient.MsgID("e-%d", i))
	}
	testserver.WaitFor(t, 60*time.Second, "events and dead letters written", func() bool {
		return recordCount(adm, "nr.events") >= n/2 && recordCount(adm, "nr.dlq") >= n/2
	})
	if got := recordCount(adm, "nr.events"); got != n/2 {
		t.Fatalf("nr.events has %d records, want %d", got, n/2)
	}
	if got := recordCount(adm, "nr.dlq"); got != n/2 {
		t.Fatalf("nr.dlq has %d records, want %d", got, n/2)
	}
}
