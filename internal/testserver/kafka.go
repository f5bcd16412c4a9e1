package testserver

import (
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// KafkaOptions configures StartKafka. The zero value is a one-broker kfake
// cluster on a free port of 127.0.0.1 with no topics, no automatic topic
// creation and its data in t.TempDir.
type KafkaOptions struct {
	// Port is the broker port on 127.0.0.1; 0 picks a free one.
	Port int

	// SeedTopics are created at the first start with Partitions
	// partitions each.
	SeedTopics []string

	// Partitions is the partition count of SeedTopics and of topics
	// created automatically; 0 means kfake's default, 10.
	Partitions int32

	// AllowAutoTopicCreation lets metadata requests create topics, as
	// auto.create.topics.enable does. kfake's default is off.
	AllowAutoTopicCreation bool

	// DataDir is where the cluster persists topics, records and group
	// offsets across Restart; empty means a new t.TempDir.
	DataDir string

	// Extra options are passed to kfake.NewCluster after ours (for
	// example kfake.WithLogger or kfake.EnableSASL); they are applied again
	// at each Restart.
	Extra []kfake.Opt
}

// Kafka is a single-broker kfake cluster started by StartKafka. kfake
// listens on 127.0.0.1 only and advertises that address. Its methods are
// safe for concurrent use.
type Kafka struct {
	t       testing.TB
	opts    KafkaOptions
	dataDir string

	mu      sync.Mutex
	cluster *kfake.Cluster
	port    int
}

// StartKafka starts a one-broker kfake cluster persisting to a data dir and
// returns once it listens. It fails the test if the cluster cannot start; a
// cleanup closes it.
func StartKafka(t testing.TB, opts KafkaOptions) *Kafka {
	t.Helper()
	k := &Kafka{t: t, opts: opts, dataDir: opts.DataDir, port: opts.Port}
	if k.dataDir == "" {
		k.dataDir = t.TempDir()
	}
	t.Cleanup(k.Close)
	// Port 0 lets the listener pick the port, so no race with other
	// processes; Restart then reuses it.
	if err := k.start(0); err != nil {
		t.Fatalf("testserver: start kfake: %v", err)
	}
	return k
}

// start creates the cluster, retrying a busy port for up to retryFor.
func (k *Kafka) start(retryFor time.Duration) error {
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(k.port),
		kfake.DataDir(k.dataDir),
	}
	if k.opts.Partitions > 0 {
		opts = append(opts, kfake.DefaultNumPartitions(int(k.opts.Partitions)))
	}
	if len(k.opts.SeedTopics) > 0 {
		opts = append(opts, kfake.SeedTopics(k.opts.Partitions, k.opts.SeedTopics...))
	}
	if k.opts.AllowAutoTopicCreation {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	opts = append(opts, k.opts.Extra...)

	deadline := time.Now().Add(retryFor)
	for {
		c, err := kfake.NewCluster(opts...)
		if err == nil {
			_, p, _ := net.SplitHostPort(c.ListenAddrs()[0])
			port, _ := strconv.Atoi(p)
			k.mu.Lock()
			k.cluster, k.port = c, port
			k.mu.Unlock()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Brokers returns the seed broker addresses, for kgo.SeedBrokers. They stay
// the same across Restart.
func (k *Kafka) Brokers() []string {
	return []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(k.Port()))}
}

// Port returns the broker port.
func (k *Kafka) Port() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.port
}

// DataDir returns the directory the cluster persists to.
func (k *Kafka) DataDir() string { return k.dataDir }

// Cluster returns the running kfake cluster, for control hooks
// (ControlKey, Fault, GroupInfo …); nil after Close. Restart replaces it,
// and hooks set on the old cluster are gone.
func (k *Kafka) Cluster() *kfake.Cluster {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cluster
}

// Close shuts the cluster down, writing its state to DataDir. It is a no-op
// when the cluster is not running.
func (k *Kafka) Close() {
	k.mu.Lock()
	c := k.cluster
	k.cluster = nil
	k.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// Restart closes the cluster if it is running and starts a new one on the
// same port from the same DataDir, so topics, records and committed offsets
// survive; clients reconnect on their own. It fails the test if the port
// cannot be bound again within 10 s. Call it from the test goroutine.
func (k *Kafka) Restart() {
	k.t.Helper()
	k.Close()
	if err := k.start(startTimeout); err != nil {
		k.t.Fatalf("testserver: restart kfake on port %d: %v", k.Port(), err)
	}
}

// RestartEmpty closes the cluster and starts a new one on the same port
// with nothing in it: no topics, records, groups or producer IDs, as a
// cluster that lost its state. Call it from the test goroutine.
func (k *Kafka) RestartEmpty() {
	k.t.Helper()
	k.Close()
	if err := os.RemoveAll(k.dataDir); err != nil {
		k.t.Fatalf("testserver: wipe kfake data %s: %v", k.dataDir, err)
	}
	if err := os.MkdirAll(k.dataDir, 0o755); err != nil {
		k.t.Fatalf("testserver: wipe kfake data %s: %v", k.dataDir, err)
	}
	if err := k.start(startTimeout); err != nil {
		k.t.Fatalf("testserver: restart kfake on port %d: %v", k.Port(), err)
	}
}
