package kafka_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/ingest"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	kafkasink "github.com/nr-bridge/nr-bridge/sinks/kafka"
)

func testLogger() *slog.Logger { return bridgetest.Logger() }

// kafkaConfig is the default configuration (as parsed from an environment
// with only KAFKA_BROKERS set, plus extra) for the cluster k.
func kafkaConfig(t *testing.T, k *testserver.Kafka, extra map[string]string) kafkaconn.Config {
	return bridgetest.KafkaConfig(t, k.Brokers(), extra)
}

func mqttConfig(brokerURL, clientID string, workers int) *mqttconn.Config {
	cfg := bridgetest.MQTTConfig(brokerURL, clientID)
	cfg.Workers, cfg.MaxInflight = workers, 500
	return cfg
}

// startSink opens a sink on conn; a cleanup closes it after the receivers
// registered later have stopped.
func startSink(t *testing.T, conn kafkaconn.Config, window int) *kafkasink.Sink {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sink, err := kafkasink.New(conn, kafkasink.Config{Window: window}, testLogger())
	if err == nil {
		err = sink.Start(ctx)
	}
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
func startReceiver(t *testing.T, cfg *mqttconn.Config, sink bridge.Sink) *ingest.Receiver {
	t.Helper()
	r := ingest.NewReceiver(cfg, sink, testLogger(), nil)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
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

// The Kafka readers are shared with the other packages' tests.
var (
	recordCount = bridgetest.RecordCount
	header      = bridgetest.Header
)

func readTopic(t *testing.T, k *testserver.Kafka, topic string, n int) []*kgo.Record {
	t.Helper()
	return bridgetest.ReadTopic(t, k.Brokers(), topic, n)
}
