// Package bridgetest has the bridge-specific helpers the tests of several
// packages share: an MQTT configuration with fast test timings and Kafka
// readers. It imports bridge, so only external test packages (package
// x_test) can use it.
package bridgetest

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/nats-io/nats.go"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/ingest"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	kafkasink "github.com/nr-bridge/nr-bridge/sinks/kafka"
	"github.com/nr-bridge/nr-bridge/sinks/natsjs"
)

// MQTTConfig is a valid MQTT configuration for brokerURL with timings that
// keep tests fast: one worker, reconnects from 50 ms to 500 ms, 100
// messages in flight, acks every 5 ms. Tests change the fields they care
// about.
func MQTTConfig(brokerURL, clientID string) *mqttconn.Config {
	return &mqttconn.Config{
		URL:            brokerURL,
		ClientID:       clientID,
		ShareGroup:     "nr-listeners",
		Workers:        1,
		SessionExpiry:  time.Minute,
		KeepAlive:      30 * time.Second,
		ConnectTimeout: 5 * time.Second,
		ReconnectMin:   50 * time.Millisecond,
		ReconnectMax:   500 * time.Millisecond,
		MaxInflight:    100,
		AckInterval:    5 * time.Millisecond,
		PublishTimeout: 5 * time.Second,
	}
}

// RecordCount is the number of records in topic (the sum of its end
// offsets), or -1 while it cannot be read.
func RecordCount(adm *kadm.Client, topic string) int {
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

// ReadTopic reads at least n records of topic from the start, in partition
// order, failing the test after 30 s.
func ReadTopic(t testing.TB, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
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

// Header returns the value of r's first header named key, and whether there
// is one.
func Header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// NATSSinkConfig is the JetStream sink configuration the tests use: the
// default stream names, one-hour retention, a 1,024-message window and a
// 2 s PubAck timeout.
func NATSSinkConfig() natsjs.Config {
	return natsjs.Config{
		Streams:      NATSStreams(),
		EventsStream: "NR_EVENTS", RepliesStream: "NR_REPLIES",
		PublishWindow: 1024, AckTimeout: 2 * time.Second,
	}
}

// NATSStreams are the shared stream settings the tests use: prefix nr,
// NR_DLQ, managed, one replica, one-hour retention, a ten-minute dedupe
// window.
func NATSStreams() natsconn.Streams {
	return natsconn.Streams{
		SubjectPrefix: "nr", DLQStream: "NR_DLQ",
		ManageStreams: true, Replicas: 1, MaxAge: time.Hour, DuplicateWindow: 10 * time.Minute,
	}
}

// StartKafkaSink builds a Kafka sink of conn and cfg and starts it
// (kafka.New, then Start with ctx); the caller closes it.
func StartKafkaSink(ctx context.Context, conn kafkaconn.Config, cfg kafkasink.Config, log *slog.Logger) (*kafkasink.Sink, error) {
	sink, err := kafkasink.New(conn, cfg, log)
	if err != nil {
		return nil, err
	}
	if err := sink.Start(ctx); err != nil {
		return nil, err
	}
	return sink, nil
}

// StartNATSSink builds a JetStream sink on nc with cfg and starts it
// (natsjs.New, then Start with ctx); the caller closes it.
func StartNATSSink(ctx context.Context, nc *nats.Conn, cfg natsjs.Config, log *slog.Logger, m bridge.Metrics) (*natsjs.Sink, error) {
	sink, err := natsjs.New(nc, cfg, log, m)
	if err != nil {
		return nil, err
	}
	if err := sink.Start(ctx); err != nil {
		return nil, err
	}
	return sink, nil
}

// StartJetStreamBridge connects to natsURL, opens a JetStream sink with
// scfg and starts a receiver for cfg writing to it. It does not wait for
// the workers; a cleanup stops the receiver, closes the sink and the
// connection, in that order.
func StartJetStreamBridge(t testing.TB, cfg *mqttconn.Config, natsURL string, scfg natsjs.Config, log *slog.Logger, m bridge.Metrics) (*ingest.Receiver, *natsjs.Sink) {
	t.Helper()
	nc, err := natsconn.Connect(natsconn.Config{URL: natsURL}, "test-"+cfg.ClientID, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sink, err := StartNATSSink(ctx, nc, scfg, log, m)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	r := ingest.NewReceiver(cfg, sink, log, m)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Errorf("stop receiver: %v", err)
		}
		if err := sink.Close(ctx); err != nil {
			t.Errorf("close sink: %v", err)
		}
		nc.Close()
	})
	return r, sink
}

// Logger is the logger tests pass to components: text on stderr, WARN and
// above, so a failing test shows what went wrong without drowning in INFO.
func Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// KafkaConfig is the Kafka configuration parsed, as the bridge does, from an
// environment holding only KAFKA_BROKERS (brokers), 3 partitions per topic,
// and extra; it fails the test if it does not validate.
func KafkaConfig(t testing.TB, brokers []string, extra map[string]string) kafkaconn.Config {
	t.Helper()
	environ := map[string]string{"KAFKA_BROKERS": strings.Join(brokers, ","), "KAFKA_TOPIC_PARTITIONS": "3"}
	for k, v := range extra {
		environ[k] = v
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
