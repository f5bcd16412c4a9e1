package devmode

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kafkaCluster is the embedded Kafka-compatible broker of `-dev` with
// BACKBONE=kafka: franz-go's kfake, one broker, in memory.
type kafkaCluster struct {
	c *kfake.Cluster
}

// startKafka starts a one-broker kfake cluster listening on addr (host:port,
// from KAFKA_BROKERS). kfake binds 127.0.0.1 unless told otherwise, so the
// listen function puts the host of addr back; the broker advertises the
// address it listens on, which is what clients then dial. Topics are not
// created here: the bridge creates its own (KAFKA_CREATE_TOPICS).
func startKafka(addr string) (*kafkaCluster, error) {
	host, port, err := splitPort(addr, "KAFKA_BROKERS")
	if err != nil {
		return nil, err
	}
	listen := func(network, _ string) (net.Listener, error) {
		return net.Listen(network, net.JoinHostPort(host, fmt.Sprint(port)))
	}
	c, err := kfake.NewCluster(kfake.Ports(port), kfake.ListenFn(listen), kfake.ClusterID("nr-dev"))
	if err != nil {
		return nil, fmt.Errorf("KAFKA_BROKERS %s: kafka broker (kfake) failed to start: %w", addr, err)
	}
	return &kafkaCluster{c: c}, nil
}

func (k *kafkaCluster) addr() string {
	if a := k.c.ListenAddrs(); len(a) > 0 {
		return a[0]
	}
	return ""
}

// topicRecords returns how many records each topic holds (the sum of its
// partitions' end offsets; kfake deletes nothing), by topic name.
func (k *kafkaCluster) topicRecords(ctx context.Context) (map[string]uint64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.addr()), kgo.RequestRetries(0), kgo.DialTimeout(2*time.Second))
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx)
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	out := make(map[string]uint64)
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			out[o.Topic] += uint64(o.Offset)
		} else if _, ok := out[o.Topic]; !ok {
			out[o.Topic] = 0
		}
	})
	return out, nil
}

// stop closes the listener and every connection.
func (k *kafkaCluster) stop() { k.c.Close() }
