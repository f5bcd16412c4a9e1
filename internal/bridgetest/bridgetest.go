// Package bridgetest has the bridge-specific helpers the tests of several
// packages share: an MQTT configuration with fast test timings and Kafka
// readers. It imports bridge, so only external test packages (package
// x_test) can use it.
package bridgetest

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// MQTTConfig is a valid MQTT configuration for brokerURL with timings that
// keep tests fast: one worker, reconnects from 50 ms to 500 ms, 100
// messages in flight, acks every 5 ms. Tests change the fields they care
// about.
func MQTTConfig(brokerURL, clientID string) *bridge.MQTTConfig {
	return &bridge.MQTTConfig{
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
