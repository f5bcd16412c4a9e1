package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/publisher"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	kafkasource "github.com/nr-bridge/nr-bridge/sources/kafka"
)

func testLogger() *slog.Logger { return bridgetest.Logger() }

// setupKafka starts a cluster with the bridge's topics (3 partitions each)
// and returns its configuration as parsed from the environment.
func setupKafka(t *testing.T) (*testserver.Kafka, kafkaconn.Config) {
	t.Helper()
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	cfg := bridgetest.KafkaConfig(t, k.Brokers(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafkaconn.EnsureTopics(ctx, newAdmin(t, k), cfg); err != nil {
		t.Fatal(err)
	}
	return k, cfg
}

// newAdmin is a fresh admin client (franz-go caches topic metadata, so
// checks after a change want a new one), closed at cleanup.
func newAdmin(t *testing.T, k *testserver.Kafka) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

func mqttConfig(brokerURL, clientID string) *mqttconn.Config {
	return bridgetest.MQTTConfig(brokerURL, clientID)
}

// startPublisher starts the bridge's publisher on brokerURL, stopped at
// cleanup. It does not wait for the connection.
func startPublisher(t *testing.T, brokerURL string) *publisher.Publisher {
	t.Helper()
	return startNamedPublisher(t, brokerURL, "bridge")
}

// startNamedPublisher is startPublisher with MQTT client ID clientID, which
// also names the source's group member (its instance ID): every source
// of a group needs its own.
func startNamedPublisher(t *testing.T, brokerURL, clientID string) *publisher.Publisher {
	t.Helper()
	pub := publisher.New(mqttConfig(brokerURL, clientID), testLogger(), nil)
	if err := pub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = pub.Close(ctx)
	})
	return pub
}

// startSource starts a commands source, stopped at cleanup (unless the
// test stopped it).
func startSource(t *testing.T, cfg kafkaconn.Config, pub bridge.Publisher, pollRecords int) *kafkasource.Source {
	t.Helper()
	// The intake of pub, as the bridge builds it: scoped to the test's
	// ORG_ID, counting through the test's metrics; the publisher's MQTT
	// client ID names the group member.
	orgID, instanceID := "", ""
	var m bridge.IntakeMetrics
	if sp, ok := pub.(interface{ scope() string }); ok {
		orgID = sp.scope()
	}
	if ip, ok := pub.(interface{ ClientID() string }); ok {
		instanceID = ip.ClientID()
	}
	if mp, ok := pub.(interface{ intakeMetrics() bridge.IntakeMetrics }); ok {
		m = mp.intakeMetrics()
	}
	in := bridge.NewIntake(pub, bridge.DefaultCommandLimits(), orgID, m)
	src, err := kafkasource.New(cfg, kafkasource.Config{PollRecords: pollRecords, Concurrency: 4}, in, instanceID, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := src.Close(ctx); err != nil {
			t.Errorf("stop source: %v", err)
		}
	})
	return src
}

// producer is a plain client writing to the cluster, closed at cleanup.
func producer(t *testing.T, k *testserver.Kafka) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// produce writes records and returns them with partition and offset set.
func produce(t *testing.T, cl *kgo.Client, rs ...*kgo.Record) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return rs
}

// command is a valid command body issued now.
func command(correlationID string, ttl int) []byte {
	return fmt.Appendf(nil, `{"type":"reboot","version":1,"correlation_id":%q,"issued_at":%d,"ttl_sec":%d,"payload":{"delay":5}}`,
		correlationID, time.Now().Unix(), ttl)
}

// allCommitted reports whether group has committed the end offset of every
// partition of topic.
func allCommitted(adm *kadm.Client, group, topic string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil || ends.Error() != nil {
		return false
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return false
	}
	ok := true
	ends.Each(func(o kadm.ListedOffset) {
		c, found := committed.Lookup(topic, o.Partition)
		if o.Offset > 0 && (!found || c.At != o.Offset) {
			ok = false
		}
	})
	return ok
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
