//go:build !nodev

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// devKafkaTopics are the topics `BACKBONE=kafka nr-bridge -dev` has once
// it is ready: the bridge creates them in the embedded kfake broker.
// docs/operations.md's kcat section names the same five.
var devKafkaTopics = []string{"nr.command-status", "nr.commands", "nr.dlq", "nr.events", "nr.replies"}

// TestDevModeKafkaEndToEnd runs `BACKBONE=kafka nr-bridge -dev` as the
// README's quick start does: an embedded Kafka broker (kfake) instead of
// NATS, events from MQTT into nr.events, a command over HTTP to a node and
// its reply into nr.replies, PUBACK 0x10 for a command nobody subscribed to
// (no_subscribers, ?wait answered at once), and a clean stop.
func TestDevModeKafkaEndToEnd(t *testing.T) {
	bin := buildBridge(t)
	mqttAddr := "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t))
	kafkaAddr := "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t))
	httpAddr := "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t))
	p := startDevProcess(t, bin, map[string]string{
		"BACKBONE":       "kafka",
		"MQTT_URL":       "tcp://" + mqttAddr,
		"KAFKA_BROKERS":  kafkaAddr,
		"HTTP_ADDR":      httpAddr,
		"MQTT_CLIENT_ID": "nr-dev-kafka-test",
		"DEV_DATA_DIR":   t.TempDir(),
	})
	testserver.WaitFor(t, 60*time.Second, "GET /readyz 200", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK
	})
	testserver.WaitFor(t, 10*time.Second, "the dev INFO lines", func() bool {
		return p.findLog("dev: send a command with") != nil
	})
	if m := p.findLog("dev: Kafka broker listening"); m == nil || m["brokers"] != kafkaAddr {
		t.Errorf("Kafka log line = %v, want brokers %s", m, kafkaAddr)
	}
	if m := p.findLog("dev: NATS server listening"); m != nil {
		t.Errorf("NATS started with BACKBONE=kafka: %v", m)
	}
	if m := p.findLog("dev: watch events and replies with"); m == nil || fmt.Sprint(m["command"]) != "kcat -b "+kafkaAddr+` -q -G nr-watch -X auto.offset.reset=earliest -f '%t %k %h %s\n' nr.events nr.replies` {
		t.Errorf("watch command = %v, want kcat against %s", m, kafkaAddr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafkaAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topics, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		t.Fatalf("list topics: %v", err)
	}
	if got := topics.Names(); !slices.Equal(got, devKafkaTopics) {
		t.Fatalf("topics %v, want %v", got, devKafkaTopics)
	}

	// Events from two nodes, each with a msg_id.
	pub := mqttClient(t, mqttAddr, "test-pub", nil)
	const events = 20
	for i := range events {
		node := fmt.Sprintf("n%d", i%2)
		if _, err := pub.Publish(ctx, &paho.Publish{
			Topic: "org/demo/node/" + node + "/events", QoS: 1, Payload: []byte(fmt.Sprintf(`{"seq":%d}`, i)),
			Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "msg_id", Value: strconv.Itoa(i)}}},
		}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	recs := consume(t, ctx, kafkaAddr, "nr.events", events)
	seen := map[string]bool{}
	for _, r := range recs {
		h := headers(r)
		id := h["Nr-Msg-Id"]
		var seq struct{ Seq int }
		if err := json.Unmarshal(r.Value, &seq); err != nil || seen[id] ||
			id != fmt.Sprintf("demo/n%d/%d", seq.Seq%2, seq.Seq) || string(r.Key) != fmt.Sprintf("org/demo/node/n%d", seq.Seq%2) ||
			h["Nr-Topic"] != string(r.Key)+"/events" {
			t.Fatalf("record key %s value %s headers %v: unexpected or duplicate", r.Key, r.Value, h)
		}
		seen[id] = true
	}

	// A command to demo/n1 and its reply.
	cmds := make(chan *paho.Publish, 4)
	node := mqttClient(t, mqttAddr, "demo-n1", func(p *paho.Publish) { cmds <- p }, "org/demo/node/n1/cmd")
	body := fmt.Sprintf(`{"type":"ping","version":1,"correlation_id":"k-1","issued_at":%d,"ttl_sec":60,"payload":{}}`, time.Now().Unix())
	code, resp := post(t, "http://"+httpAddr+"/org/demo/node/n1/cmd", body)
	if code != http.StatusAccepted || resp["status"] != "published" || resp["no_subscribers"] != nil {
		t.Fatalf("POST command: %d %v, want 202 published", code, resp)
	}
	var c *paho.Publish
	select {
	case c = <-cmds:
	case <-time.After(20 * time.Second):
		t.Fatal("command not received by the node")
	}
	if string(c.Payload) != body || c.Properties == nil || string(c.Properties.CorrelationData) != "k-1" {
		t.Fatalf("command received: %s %+v", c.Payload, c.Properties)
	}
	if _, err := node.Publish(ctx, &paho.Publish{
		Topic: c.Properties.ResponseTopic, QoS: 1, Payload: []byte(`{"ok":true}`),
		Properties: &paho.PublishProperties{CorrelationData: c.Properties.CorrelationData},
	}); err != nil {
		t.Fatalf("publish reply: %v", err)
	}
	replies := consume(t, ctx, kafkaAddr, "nr.replies", 1)
	if h := headers(replies[0]); string(replies[0].Key) != "org/demo/node/n1" || h["Nr-Correlation-Data"] != "k-1" || string(replies[0].Value) != `{"ok":true}` {
		t.Fatalf("nr.replies: key %s value %s headers %v", replies[0].Key, replies[0].Value, h)
	}

	// Nobody subscribed to demo/n9: PUBACK 0x10 from the embedded broker,
	// so no_subscribers, and ?wait answers at once with 202 instead of
	// waiting for a reply that cannot come.
	body = fmt.Sprintf(`{"type":"ping","version":1,"correlation_id":"k-2","issued_at":%d,"ttl_sec":60,"payload":{}}`, time.Now().Unix())
	code, resp = post(t, "http://"+httpAddr+"/org/demo/node/n9/cmd?wait=30s", body)
	if code != http.StatusAccepted || resp["status"] != "published" || resp["no_subscribers"] != true {
		t.Fatalf("POST to a node nobody subscribed to: %d %v, want 202 published with no_subscribers", code, resp)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.exitCode(t, 60*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	if p.findLog("dev: embedded servers stopped") == nil {
		t.Error("missing stop log line")
	}
	for _, a := range []string{mqttAddr, kafkaAddr, httpAddr} {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Errorf("after exit, %s is still in use: %v", a, err)
			continue
		}
		ln.Close()
	}
}

// consume reads want records of topic from the start and fails on fewer,
// or on more arriving within a second after them.
func consume(t *testing.T, ctx context.Context, brokers, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for len(recs) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: %d records, want %d", topic, len(recs), want)
		}
		recs = append(recs, fs.Records()...)
	}
	extra, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	recs = append(recs, cl.PollFetches(extra).Records()...)
	if len(recs) != want {
		t.Fatalf("%s: %d records, want %d", topic, len(recs), want)
	}
	return recs
}

// headers returns a record's headers by key.
func headers(r *kgo.Record) map[string]string {
	m := map[string]string{}
	for _, h := range r.Headers {
		m[h.Key] = string(h.Value)
	}
	return m
}

// post sends a command body and returns the status code and JSON answer.
func post(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("POST %s: %d, body not JSON: %v", url, resp.StatusCode, err)
	}
	return resp.StatusCode, m
}
