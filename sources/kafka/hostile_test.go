package kafka_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
	"github.com/nr-bridge/nr-bridge/internal/publisher"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	kafkasource "github.com/nr-bridge/nr-bridge/sources/kafka"
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

// bigProducer writes records of up to 2 MiB to the partition each record
// names.
func bigProducer(t *testing.T, k *testserver.Kafka) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.ProducerBatchMaxBytes(2<<20),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// dlqByOffset indexes dead letters by their Nr-Source-Offset and partition.
func dlqBySource(dls []*kgo.Record) map[string]*kgo.Record {
	m := map[string]*kgo.Record{}
	for _, dl := range dls {
		p, _ := header(dl, kafkasource.HeaderSourcePartition)
		o, _ := header(dl, kafkasource.HeaderSourceOffset)
		m[p+"@"+o] = dl
	}
	return m
}

// Issue 12.4 on the Kafka stream: case variants, an escaped duplicate and a
// control character in type are dead-lettered (reason invalid_command) with
// the field named, and never published.
func TestHostileBodiesDeadLettered(t *testing.T) {
	k, cfg := setupKafka(t)
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	agent := testclient.ConnectMQTT(t, mq.URL(), "agent", "org/#")
	pub := &reasonPublisher{Publisher: startPublisher(t, mq.URL())}
	testserver.WaitFor(t, 10*time.Second, "publisher connected", func() bool { return pub.Ready() == nil })
	startSource(t, cfg, pub, 20)

	now := time.Now().Unix()
	doc := func(corr, extra string) []byte {
		return fmt.Appendf(nil, `{"type":"ping","version":1,"correlation_id":%q,"issued_at":%d,"ttl_sec":60,"payload":{}%s}`, corr, now, extra)
	}
	cases := []struct {
		wantError string
		body      []byte
	}{
		{`type: key "TYPE" differs from it only in case`, doc("c-1", `,"TYPE":"factory-reset","Payload":{"wipe":true}`)},
		{`type: key "TYPE" differs from it only in case`, doc("c-2", `,"\u0054YPE":"factory-reset"`)},
		{"type: duplicate key", doc("c-3", `,"typ\u0065":"factory-reset"`)},
		{"type: must be printable UTF-8 without control characters",
			fmt.Appendf(nil, `{"type":"ping\u0000","version":1,"correlation_id":"c-4","issued_at":%d,"ttl_sec":60,"payload":{}}`, now)},
	}
	var recs []*kgo.Record
	for _, c := range cases {
		recs = append(recs, &kgo.Record{Topic: "nr.commands", Key: []byte("org/acme/node/n1"), Value: c.body})
	}
	produce(t, producer(t, k), recs...)
	adm := newAdmin(t, k)
	testserver.WaitFor(t, 30*time.Second, "4 dead letters", func() bool { return recordCount(adm, "nr.dlq") >= len(cases) })
	testserver.WaitFor(t, 30*time.Second, "every offset committed", func() bool { return allCommitted(adm, kafkaconn.DefaultGroup, "nr.commands") })
	dls := readTopic(t, k, "nr.dlq", len(cases))
	if len(dls) != len(cases) {
		t.Fatalf("nr.dlq has %d records, want %d", len(dls), len(cases))
	}
	byOffset := dlqBySource(dls)
	for i, c := range cases {
		dl := byOffset[fmt.Sprintf("%d@%d", recs[i].Partition, recs[i].Offset)]
		if dl == nil {
			t.Fatalf("no dead letter for case %d", i)
		}
		if got, _ := header(dl, bridge.HeaderError); got != c.wantError || !bytes.Equal(dl.Value, c.body) {
			t.Errorf("case %d: Nr-Error %q, value %q; want %q and the body unchanged", i, got, dl.Value, c.wantError)
		}
	}
	if got := pub.deadLettered(); len(got) != len(cases) || strings.Count(strings.Join(got, ","), bridge.ReasonInvalidCommand) != len(cases) {
		t.Errorf("dead-letter reasons %v, want %d x %s", got, len(cases), bridge.ReasonInvalidCommand)
	}
	// The good command behind them on the same partition is the only
	// message.
	produce(t, producer(t, k), &kgo.Record{Topic: "nr.commands", Key: []byte("org/acme/node/n1"), Value: command("sentinel", 60)})
	testserver.WaitFor(t, 30*time.Second, "the sentinel", func() bool { return len(agent.Received()) > 0 })
	if got := agent.Received(); len(got) != 1 || string(got[0].Properties.CorrelationData) != "sentinel" {
		t.Fatalf("agent got %d messages (first %q), want only the sentinel", len(got), got[0].Properties.CorrelationData)
	}
}

// Issue 18: command records with a 600,000-byte key, with a 1,000,000-byte
// header and with a 1,000,000-byte key are dead-lettered within the
// dead-letter topic's limit (the record key cut to 256 bytes with
// Nr-Source-Key-Size, Nr-Source-Key whole when it fits and cut by
// FitDeadLetter when not; the record's own header dropped first), their
// offsets are committed, and the good commands behind them on the same
// partition and on another one are published.
func TestHugeKeyAndHeaderDeadLettered(t *testing.T) {
	k, cfg := setupKafka(t)
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	agent := testclient.ConnectMQTT(t, mq.URL(), "agent", "org/#")
	pub := &reasonPublisher{Publisher: startPublisher(t, mq.URL())}
	testserver.WaitFor(t, 10*time.Second, "publisher connected", func() bool { return pub.Ready() == nil })
	startSource(t, cfg, pub, 20)

	hugeKey := append([]byte("org/acme/node/"), bytes.Repeat([]byte("k"), 600_000-len("org/acme/node/"))...)
	hugerKey := append([]byte("org/acme/node/"), bytes.Repeat([]byte("q"), 1_000_000-len("org/acme/node/"))...)
	hugeHeader := kgo.RecordHeader{Key: "blob", Value: bytes.Repeat([]byte("h"), 1_000_000)}
	keyCmd := command("c-hugekey", 300)
	start := time.Now()
	recs := produce(t, bigProducer(t, k),
		&kgo.Record{Topic: "nr.commands", Partition: 0, Key: hugeKey, Value: keyCmd},
		&kgo.Record{Topic: "nr.commands", Partition: 0, Key: []byte("org/acme/node/n2"), Value: []byte("not json"), Headers: []kgo.RecordHeader{hugeHeader}},
		&kgo.Record{Topic: "nr.commands", Partition: 0, Key: hugerKey, Value: keyCmd},
		&kgo.Record{Topic: "nr.commands", Partition: 0, Key: []byte("org/acme/node/n3"), Value: command("c-behind", 300)},
		&kgo.Record{Topic: "nr.commands", Partition: 1, Key: []byte("org/acme/node/n4"), Value: command("c-other", 300)},
	)
	testserver.WaitFor(t, 30*time.Second, "both good commands published", func() bool {
		got := byCorrelation(agent.Received())
		return len(got["c-behind"]) > 0 && len(got["c-other"]) > 0
	})
	t.Logf("good commands published %v after producing", time.Since(start).Round(time.Millisecond))
	adm := newAdmin(t, k)
	testserver.WaitFor(t, 30*time.Second, "every offset committed", func() bool { return allCommitted(adm, kafkaconn.DefaultGroup, "nr.commands") })
	if n := recordCount(adm, "nr.dlq"); n != 3 {
		t.Fatalf("nr.dlq has %d records, want 3", n)
	}
	byOffset := dlqBySource(readTopic(t, k, "nr.dlq", 3))

	dl := byOffset[fmt.Sprintf("0@%d", recs[0].Offset)]
	if dl == nil {
		t.Fatal("no dead letter for the huge key")
	}
	if !bytes.Equal(dl.Key, hugeKey[:256]) || !bytes.Equal(dl.Value, keyCmd) {
		t.Errorf("huge key: dead letter key %d bytes, value %q; want the first 256 bytes of the key and the command", len(dl.Key), dl.Value)
	}
	// It fits whole in Nr-Source-Key.
	if srcKey, _ := header(dl, kafkasource.HeaderSourceKey); srcKey != string(hugeKey) {
		t.Errorf("Nr-Source-Key %d bytes, want the whole key", len(srcKey))
	}
	if v, _ := header(dl, kafkasource.HeaderSourceKeySize); v != "600000" {
		t.Errorf("%s = %q, want 600000", kafkasource.HeaderSourceKeySize, v)
	}
	if v, _ := header(dl, bridge.HeaderError); !strings.HasPrefix(v, `key "org/acme/node/kkkk`) || len(v) > 1024 {
		t.Errorf("Nr-Error %.80q... (%d bytes), want the key error, at most 1024 bytes", v, len(v))
	}

	// A key of 1,000,000 bytes does not: Nr-Source-Key is cut, the size kept.
	dl = byOffset[fmt.Sprintf("0@%d", recs[2].Offset)]
	if dl == nil {
		t.Fatal("no dead letter for the 1,000,000-byte key")
	}
	srcKey, _ := header(dl, kafkasource.HeaderSourceKey)
	if len(srcKey) < 256 || len(srcKey) >= len(hugerKey) || !bytes.HasPrefix(hugerKey, []byte(srcKey)) {
		t.Errorf("Nr-Source-Key %d bytes, want a prefix of the key, cut", len(srcKey))
	}
	// FitDeadLetter cuts the value before it shortens a Nr- header.
	orig, _ := header(dl, bridge.HeaderOriginalSize)
	if v, _ := header(dl, kafkasource.HeaderSourceKeySize); v != "1000000" || !bytes.Equal(dl.Key, hugerKey[:256]) ||
		len(dl.Value) != 0 || orig != strconv.Itoa(len(keyCmd)) {
		t.Errorf("%s = %q, key %d bytes, value %q, Nr-Original-Size %q; want 1000000, 256 bytes, no value and %d",
			kafkasource.HeaderSourceKeySize, v, len(dl.Key), dl.Value, orig, len(keyCmd))
	}

	dl = byOffset[fmt.Sprintf("0@%d", recs[1].Offset)]
	if dl == nil {
		t.Fatal("no dead letter for the huge header")
	}
	if _, ok := header(dl, "blob"); ok || string(dl.Key) != "org/acme/node/n2" || string(dl.Value) != "not json" {
		t.Errorf("huge header: key %q value %q, header blob kept %v", dl.Key, dl.Value, ok)
	}
	for name, want := range map[string]string{
		bridge.HeaderReason:               bridge.ReasonMalformed,
		bridge.HeaderError:                "not a JSON object: invalid character 'o' in literal null (expecting 'u')",
		bridge.HeaderDroppedHeaders:       "1",
		kafkasource.HeaderSourceTopic:     "nr.commands",
		kafkasource.HeaderSourcePartition: "0",
		kafkasource.HeaderSourceOffset:    strconv.FormatInt(recs[1].Offset, 10),
		kafkasource.HeaderSourceKey:       "org/acme/node/n2",
	} {
		if got, _ := header(dl, name); got != want {
			t.Errorf("huge header: %s = %q, want %q", name, got, want)
		}
	}
	if got := pub.deadLettered(); len(got) != 3 {
		t.Errorf("dead-letter reasons %v, want 3", got)
	}
	got := byCorrelation(agent.Received())
	if len(agent.Received()) != 2 || len(got["c-hugekey"]) != 0 {
		t.Errorf("agent got %d messages, want only c-behind and c-other", len(agent.Received()))
	}
}

// A dead letter the topic refuses for good (here: nr.dlq's
// max.message.bytes lowered after the source read it) is cut to its
// minimum and written again, and the offset is committed.
func TestDeadLetterRefusedIsCutToMinimum(t *testing.T) {
	k, cfg := setupKafka(t)
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	agent := testclient.ConnectMQTT(t, mq.URL(), "agent", "org/#")
	pub := startPublisher(t, mq.URL())
	testserver.WaitFor(t, 10*time.Second, "publisher connected", func() bool { return pub.Ready() == nil })
	startSource(t, cfg, pub, 20)

	adm := newAdmin(t, k)
	small := "4096"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: &small}}, "nr.dlq"); err != nil {
		t.Fatal(err)
	}
	const size = 100_000
	recs := produce(t, producer(t, k),
		&kgo.Record{Topic: "nr.commands", Key: []byte("org/acme/node/n1"), Value: bytes.Repeat([]byte("z"), size)},
		&kgo.Record{Topic: "nr.commands", Key: []byte("org/acme/node/n1"), Value: command("sentinel", 60)},
	)
	testserver.WaitFor(t, 30*time.Second, "the sentinel", func() bool { return len(agent.Received()) > 0 })
	testserver.WaitFor(t, 30*time.Second, "every offset committed", func() bool { return allCommitted(adm, kafkaconn.DefaultGroup, "nr.commands") })
	dls := readTopic(t, k, "nr.dlq", 1)
	if len(dls) != 1 {
		t.Fatalf("nr.dlq has %d records, want 1", len(dls))
	}
	dl := dls[0]
	for name, want := range map[string]string{
		bridge.HeaderReason:               bridge.ReasonMalformed,
		bridge.HeaderError:                "not a JSON object: invalid character 'z' looking for beginning of value",
		bridge.HeaderOriginalSize:         strconv.Itoa(size),
		kafkasource.HeaderSourceOffset:    strconv.FormatInt(recs[0].Offset, 10),
		kafkasource.HeaderSourcePartition: strconv.Itoa(int(recs[0].Partition)),
	} {
		if got, _ := header(dl, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if len(dl.Value) != 0 || string(dl.Key) != "org/acme/node/n1" {
		t.Errorf("dead letter key %q, value %d bytes; want the key and no value", dl.Key, len(dl.Value))
	}
}
