package kafka_test

import (
	"context"
	"fmt"
	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"strings"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	kafkasink "github.com/nr-bridge/nr-bridge/sinks/kafka"
)

// A cluster that lost its state (kfake wiped and started empty while
// events flow) is recovered without a restart: the sink recreates its
// topics and every event the broker still holds arrives.
func TestClusterLostState(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	sink := startSink(t, kafkaConfig(t, k, nil), 256)
	startReceiver(t, mqttConfig(mq.URL(), "lost", 2), sink)
	_, adm := adminClient(t, k)
	pub := testclient.ConnectMQTT(t, mq.URL(), "node")

	const before, after = 300, 300
	for i := range before {
		pub.Publish("org/acme/node/n1/events", fmt.Appendf(nil, "before-%d", i), nil)
	}
	testserver.WaitFor(t, 30*time.Second, "events before the wipe stored", func() bool { return recordCount(adm, "nr.events") == before })

	k.RestartEmpty()
	start := time.Now()
	for i := range after {
		pub.Publish("org/acme/node/n1/events", fmt.Appendf(nil, "after-%d", i), nil)
	}
	testserver.WaitFor(t, 60*time.Second, "events after the wipe stored", func() bool { return recordCount(adm, "nr.events") >= after })
	t.Logf("recovered in %v", time.Since(start).Round(time.Millisecond))
	seen := map[string]int{}
	for _, r := range readTopic(t, k, "nr.events", after) {
		seen[string(r.Value)]++
	}
	for i := range after {
		if n := seen[fmt.Sprintf("after-%d", i)]; n != 1 {
			t.Errorf("after-%d stored %d times", i, n)
		}
	}
	if err := sink.Ready(); err != nil {
		t.Errorf("sink not ready after recovery: %v", err)
	}
}

// With KAFKA_CREATE_TOPICS=false the bridge cannot recreate lost topics:
// /readyz (Sink.Ready) says why once writes have failed for
// KAFKA_UNHEALTHY_AFTER, and writes resume once an operator creates the
// topics again.
func TestClusterLostStateUnmanaged(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	_, adm := adminClient(t, k)
	createTopics := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := kafkaconn.EnsureTopics(ctx, adm, kafkaConfig(t, k, nil)); err != nil {
			t.Fatal(err)
		}
	}
	createTopics()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sink, err := bridgetest.StartKafkaSink(ctx, kafkaConfig(t, k, map[string]string{"KAFKA_CREATE_TOPICS": "false"}),
		kafkasink.Config{Window: 256, UnhealthyAfter: 2 * time.Second}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sink.Close(ctx); err != nil {
			t.Errorf("close sink: %v", err)
		}
	})
	startReceiver(t, mqttConfig(mq.URL(), "unmanaged", 2), sink)
	pub := testclient.ConnectMQTT(t, mq.URL(), "node")

	k.RestartEmpty()
	const n = 100
	for i := range n {
		pub.Publish("org/acme/node/n1/events", fmt.Appendf(nil, "e-%d", i), nil)
	}
	testserver.WaitFor(t, 30*time.Second, "sink reports failing writes", func() bool {
		err := sink.Ready()
		return err != nil && strings.Contains(err.Error(), "backbone writes failing for") && strings.Contains(err.Error(), "UNKNOWN_TOPIC")
	})
	createTopics()
	testserver.WaitFor(t, 30*time.Second, "events stored once the topics exist again", func() bool { return recordCount(adm, "nr.events") >= n })
	testserver.WaitFor(t, 10*time.Second, "sink ready again", func() bool { return sink.Ready() == nil })
	seen := map[string]int{}
	for _, r := range readTopic(t, k, "nr.events", n) {
		seen[string(r.Value)]++
	}
	for i := range n {
		if c := seen[fmt.Sprintf("e-%d", i)]; c != 1 {
			t.Errorf("e-%d stored %d times", i, c)
		}
	}
}
