package kafka_test

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// Regression tests for hostile input from nodes (issue 12) on Kafka. Each
// sends good traffic after the hostile message, more events than
// MQTT_WORKERS x MQTT_MAX_INFLIGHT, and requires all of it to arrive.

const (
	hostileWorkers  = 2
	hostileInflight = 50
	goodEvents      = 3 * hostileWorkers * hostileInflight // 300
)

// startHostile runs a sink and two workers of 50 in-flight messages each
// on a fresh cluster and broker.
func startHostile(t *testing.T, clientID string) (*testserver.Kafka, *testclient.MQTT, *kadm.Client) {
	t.Helper()
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	sink := startSink(t, kafkaConfig(t, k, nil), 256)
	cfg := mqttConfig(mq.URL(), clientID, hostileWorkers)
	cfg.MaxInflight = hostileInflight
	startReceiver(t, cfg, sink)
	_, adm := adminClient(t, k)
	return k, testclient.ConnectMQTT(t, mq.URL(), "node-"+clientID), adm
}

// publishGood publishes goodEvents events of node n9, msg_id g-<i>.
func publishGood(pub *testclient.MQTT) {
	for i := range goodEvents {
		pub.Publish("org/acme/node/n9/events", payload("events", 9, i), testclient.MsgID("g-%d", i))
	}
}

// checkGood checks that nr.events holds every good event once, plus extra
// others, and returns the others.
func checkGood(t *testing.T, k *testserver.Kafka, adm *kadm.Client, extra int) []*kgo.Record {
	t.Helper()
	testserver.WaitFor(t, 60*time.Second, "every good event", func() bool {
		return recordCount(adm, "nr.events") >= goodEvents+extra
	})
	recs := readTopic(t, k, "nr.events", goodEvents+extra)
	if len(recs) != goodEvents+extra {
		t.Fatalf("nr.events has %d records, want %d", len(recs), goodEvents+extra)
	}
	seen := map[int]int{}
	var others []*kgo.Record
	for _, r := range recs {
		if !bytes.HasPrefix(r.Value, []byte("events/n9/")) {
			others = append(others, r)
			continue
		}
		_, _, i := seqOf(t, r.Value)
		seen[i]++
	}
	for i := range goodEvents {
		if seen[i] != 1 {
			t.Fatalf("good event %d stored %d times, want 1", i, seen[i])
		}
	}
	return others
}

// TestReservedPropertiesNeverBecomeHeaders: a node's Content-Type, Nats-
// and Nr- user properties (any case) are dropped; the record's Content-Type
// is the MQTT content type.
func TestReservedPropertiesNeverBecomeHeaders(t *testing.T) {
	k, pub, adm := startHostile(t, "reserved")
	props := testclient.Props("msg_id", "evil-1", "Content-Type", "text/evil", "content-type", "text/worse",
		"Nats-Expected-Stream", "NOPE", "Nr-Org", "other", "nr-msg-id", "forged", "site", "berlin")
	props.ContentType = "application/json"
	pub.Publish("org/acme/node/evil/events", []byte(`{"evil":true}`), props)
	publishGood(pub)

	others := checkGood(t, k, adm, 1)
	r := others[0]
	if string(r.Value) != `{"evil":true}` {
		t.Fatalf("value %q", r.Value)
	}
	wantKeys := []string{"Nr-Topic", "Nr-Org", "Nr-Node", "Nr-Kind", "Nr-Received-At", "Content-Type", "site", "Nr-Msg-Id"}
	if got := headerKeys(r); !slices.Equal(got, wantKeys) {
		t.Fatalf("headers %v, want %v", got, wantKeys)
	}
	for hk, hv := range map[string]string{"Content-Type": "application/json", "Nr-Org": "acme", "site": "berlin", "Nr-Msg-Id": "acme/evil/evil-1"} {
		if got, _ := header(r, hk); got != hv {
			t.Errorf("header %s = %q, want %q", hk, got, hv)
		}
	}
	if n := recordCount(adm, "nr.dlq"); n != 0 {
		t.Errorf("nr.dlq has %d records", n)
	}
}

// TestHeadersTooLargeDeadLettered: 1.2 MB of user properties on a 12-byte
// payload is over the topic's limit. The dead letter drops user headers
// until it fits and is stored (it used to be refused too and the message
// was acknowledged and lost).
func TestHeadersTooLargeDeadLettered(t *testing.T) {
	k, pub, adm := startHostile(t, "hdrs")
	props := testclient.MsgID("fat")
	big := strings.Repeat("v", 4000)
	for i := range 300 {
		props.User = append(props.User, testclient.Props(fmt.Sprintf("p%03d", i), big).User...)
	}
	pub.Publish("org/acme/node/fat/events", []byte("twelve bytes"), props)
	publishGood(pub)

	checkGood(t, k, adm, 0)
	dl := readTopic(t, k, "nr.dlq", 1)
	if len(dl) != 1 {
		t.Fatalf("nr.dlq has %d records", len(dl))
	}
	r := dl[0]
	if string(r.Value) != "twelve bytes" || string(r.Key) != "org/acme/node/fat" {
		t.Fatalf("dead letter key %q value %q", r.Key, r.Value)
	}
	if e, _ := header(r, "Nr-Error"); !strings.Contains(e, "message too large") || !strings.Contains(e, "MESSAGE_TOO_LARGE") {
		t.Errorf("Nr-Error %q", e)
	}
	if id, _ := header(r, "Nr-Msg-Id"); id != "acme/fat/fat" {
		t.Errorf("Nr-Msg-Id %q", id)
	}
	kept := 0
	for i := range 300 {
		if v, _ := header(r, fmt.Sprintf("p%03d", i)); v == big {
			kept++
		}
	}
	if dropped, _ := header(r, "Nr-Dropped-Headers"); dropped != fmt.Sprint(300-kept) || kept == 0 || kept == 300 {
		t.Errorf("Nr-Dropped-Headers %q with %d of 300 properties kept", dropped, kept)
	}
	if _, ok := header(r, "Nr-Original-Size"); ok {
		t.Error("Nr-Original-Size set though the payload was not cut")
	}
}

// TestDedupeScopedToNode: Nr-Msg-Id is the msg_id scoped to org and node.
func TestDedupeScopedToNode(t *testing.T) {
	k, pub, adm := startHostile(t, "dedupe")
	pub.Publish("org/tenantA/node/x/events", []byte("a"), testclient.MsgID("K"))
	pub.Publish("org/tenantB/node/v/events", []byte("b"), testclient.MsgID("K"))
	publishGood(pub)
	ids := map[string]string{}
	for _, r := range checkGood(t, k, adm, 2) {
		ids[string(r.Value)], _ = header(r, "Nr-Msg-Id")
	}
	if len(ids) != 2 || ids["a"] != "tenantA/x/K" || ids["b"] != "tenantB/v/K" {
		t.Fatalf("Nr-Msg-Id %v, want a -> tenantA/x/K, b -> tenantB/v/K", ids)
	}
}

// TestRejectedRecordDeadLettered: the cluster refuses a record for good
// (INVALID_RECORD, answered by kfake to the reply's produce request). The
// reply is dead-lettered at once with the cluster's error as Nr-Error, and
// the events after it are stored.
func TestRejectedRecordDeadLettered(t *testing.T) {
	k, pub, adm := startHostile(t, "rejected")
	k.Cluster().ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		req := kreq.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.InvalidRecord.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true // once: later requests are the cluster's
	})
	pub.Publish("org/acme/node/n1/reply", []byte("reply"), testclient.MsgID("r1"))
	dl := readTopic(t, k, "nr.dlq", 1)
	publishGood(pub)
	checkGood(t, k, adm, 0)

	r := dl[0]
	if string(r.Value) != "reply" || string(r.Key) != "org/acme/node/n1" {
		t.Fatalf("dead letter key %q value %q", r.Key, r.Value)
	}
	if e, _ := header(r, "Nr-Error"); !strings.Contains(e, "produce to nr.replies: refused by the backbone") || !strings.Contains(e, "INVALID_RECORD") {
		t.Errorf("Nr-Error %q", e)
	}
	if n := recordCount(adm, "nr.replies"); n != 0 {
		t.Errorf("nr.replies has %d records", n)
	}
}
