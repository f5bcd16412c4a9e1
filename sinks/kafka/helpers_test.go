package kafka_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	kafkasink "github.com/nr-bridge/nr-bridge/sinks/kafka"
)

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// kafkaConfig is the default configuration (as parsed from an environment
// with only KAFKA_BROKERS set, plus extra) for the cluster k.
func kafkaConfig(t *testing.T, k *testserver.Kafka, extra map[string]string) kafkaconn.Config {
	t.Helper()
	environ := map[string]string{"KAFKA_BROKERS": strings.Join(k.Brokers(), ","), "KAFKA_TOPIC_PARTITIONS": "3"}
	for key, v := range extra {
		environ[key] = v
	}
	var cfg kafkaconn.Config
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: environ}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func mqttConfig(brokerURL, clientID string, workers int) *bridge.MQTTConfig {
	return &bridge.MQTTConfig{
		URL:            brokerURL,
		ClientID:       clientID,
		ShareGroup:     "nr-listeners",
		Workers:        workers,
		SessionExpiry:  time.Minute,
		KeepAlive:      30 * time.Second,
		ConnectTimeout: 5 * time.Second,
		ReconnectMin:   100 * time.Millisecond,
		ReconnectMax:   time.Second,
		MaxInflight:    500,
		AckInterval:    5 * time.Millisecond,
		PublishTimeout: 5 * time.Second,
	}
}

// startSink opens a sink on conn; a cleanup closes it after the receivers
// registered later have stopped.
func startSink(t *testing.T, conn kafkaconn.Config, window int) *kafkasink.Sink {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sink, err := kafkasink.New(ctx, conn, kafkasink.Config{Window: window}, testLogger())
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
	return sink
}

// startReceiver runs the MQTT workers writing to sink, stopped at cleanup.
func startReceiver(t *testing.T, cfg *bridge.MQTTConfig, sink bridge.Sink) *bridge.Receiver {
	t.Helper()
	r := bridge.NewReceiver(cfg, sink, testLogger())
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Stop(ctx); err != nil {
			t.Errorf("stop receiver: %v", err)
		}
	})
	testserver.WaitFor(t, 10*time.Second, "workers ready", func() bool { return r.Ready() == nil })
	return r
}

// adminClient is a plain client on k, closed at cleanup.
func adminClient(t *testing.T, k *testserver.Kafka) (*kgo.Client, *kadm.Client) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl, kadm.NewClient(cl)
}

// recordCount is the number of records in topic (sum of the end offsets),
// or -1 while it cannot be read.
func recordCount(adm *kadm.Client, topic string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil || ends.Error() != nil {
		return -1
	}
	n := 0
	ends.Each(func(o kadm.ListedOffset) { n += int(o.Offset) })
	return n
}

// readTopic reads every record of topic from the start, n at least, in
// partition order.
func readTopic(t *testing.T, k *testserver.Kafka, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(30 * time.Second)
	for len(out) < n {
		if time.Now().After(deadline) {
			t.Fatalf("read %s: %d of %d records after 30s", topic, len(out), n)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

// header returns the value of the first header named key, and whether
// there is one.
func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}
