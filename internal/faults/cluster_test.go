//go:build faults

package faults

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// startNATSCluster runs three nats-server processes in one JetStream
// cluster and waits until its JetStream API answers (a meta leader is
// elected).
func startNATSCluster(t *testing.T) (*testserver.NATSCluster, jetstream.JetStream) {
	t.Helper()
	c := testserver.StartNATSCluster(t, 3)
	_, js := connectNATS(t, c.URLs())
	testserver.WaitFor(t, 30*time.Second, "JetStream cluster meta leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err == nil
	})
	return c, js
}

// streamLeader returns the index in c of the node leading stream's RAFT
// group, waiting (30 s) until it has one and all three replicas.
func streamLeader(t *testing.T, c *testserver.NATSCluster, js jetstream.JetStream, stream string) int {
	t.Helper()
	leader := -1
	testserver.WaitFor(t, 30*time.Second, stream+" leader with 2 current replicas", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil || info.Config.Replicas != 3 {
			return false
		}
		current := 0
		for _, r := range info.Cluster.Replicas {
			if r.Current {
				current++
			}
		}
		leader = c.Node(info.Cluster.Leader)
		return leader >= 0 && current == 2
	})
	return leader
}

// clusterNATSEnv is a bridge's environment on the cluster, with every
// stream it manages replicated three times.
func clusterNATSEnv(mqttURL string, c *testserver.NATSCluster, clientID string) map[string]string {
	env := natsEnv(mqttURL, c.URLs(), clientID)
	env["NATS_STREAM_REPLICAS"] = "3"
	return env
}

// TestNATSClusterEventsLeaderKill: three nats-server processes, streams
// with NATS_STREAM_REPLICAS=3; the leader of NR_EVENTS is killed -9 while
// events flow and started again 10 s later. The two others elect a leader
// and go on; nothing is lost.
func TestNATSClusterEventsLeaderKill(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	c, js := startNATSCluster(t)
	b := startBridge(t, bridgeBinary(t, false), "bridge", clusterNATSEnv(mq.URL(), c, "fi-cluster-ev"))
	leader := streamLeader(t, c, js, "NR_EVENTS")
	load := startLoad(t, mq.URL(), defaultLoad("cluster-ev"))
	waitSent(t, load, 1000)

	c.Nodes[leader].Kill()
	killed := time.Now()
	newLeader := -1
	testserver.WaitFor(t, 30*time.Second, "a new NR_EVENTS leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s, err := js.Stream(ctx, "NR_EVENTS")
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil {
			return false
		}
		newLeader = c.Node(info.Cluster.Leader)
		return newLeader >= 0 && newLeader != leader
	})
	election := time.Since(killed)
	time.Sleep(max(outage-election, 0))
	c.Nodes[leader].Restart()
	time.Sleep(3 * time.Second)
	load.Stop()

	sent := load.IDs()
	got := collectNATS(t, js, "NR_EVENTS", "Nats-Msg-Id", sent, 60*time.Second)
	r := count("nats-cluster-r3-events-leader-kill9", start, sent, got)
	r.Note = join(r.Note, fmt.Sprintf("leader %s killed -9, %s elected in %v, old leader back after 10 s",
		c.Name(leader), c.Name(newLeader), election.Round(10*time.Millisecond)))
	mustNotLoseBounded(t, r, sent, got, retriedBound(t, load, 0, "", b), b)
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
}

// TestNATSClusterCommandsLeaderKill: commands flow through NR_COMMANDS
// (and over HTTP) while the leader of NR_COMMANDS is killed -9 and started
// again 10 s later: every command is delivered to its node.
func TestNATSClusterCommandsLeaderKill(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	c, js := startNATSCluster(t)
	env := clusterNATSEnv(mq.URL(), c, "fi-cluster-cmd")
	env["NATS_COMMANDS_RETRY_MAX"] = "4s"
	b := startBridge(t, bridgeBinary(t, false), "bridge", env)
	node := startCmdNode(t, mq.URL(), "cluster-cmd-node")
	leader := streamLeader(t, c, js, "NR_COMMANDS")
	load := startCmdLoad(t, b.addr, js, "ccmd", 20)
	time.Sleep(3 * time.Second)

	c.Nodes[leader].Kill()
	time.Sleep(outage)
	c.Nodes[leader].Restart()
	time.Sleep(4 * time.Second)
	load.Stop()

	sent := load.IDs()
	var got map[string]int
	testserver.WaitFor(t, 60*time.Second, "every accepted command delivered", func() bool {
		got = node.delivered()
		return len(missing(sent, got, 1)) == 0
	})
	r := count("nats-cluster-r3-commands-leader-kill9", start, sent, got)
	r.Note = fmt.Sprintf("NR_COMMANDS leader %s killed -9 while commands were consumed, back after 10 s", c.Name(leader))
	// A command published whose JetStream ack the failover lost is
	// delivered again: at most those in flight at the kill.
	checkDuplicates(t, &r, writtenTwiceBound{20, "commands being published when the leader died: NATS_COMMANDS_CONCURRENCY 16 + 4 HTTP callers"}, b)
	mustNotLose(t, r, sent, got)
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
}

// TestKafkaClusterLeadersMove: a three-broker kfake cluster (topics
// created with replication factor 3) while events and commands flow: every
// partition leader moves (ShufflePartitionLeaders), one partition of
// nr.events is moved by hand (MoveTopicPartition), the group coordinator
// moves (RehashCoordinators), and then a broker is removed (RemoveNode).
// Nothing is lost, events nor commands.
func TestKafkaClusterLeadersMove(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	k := testserver.StartKafka(t, testserver.KafkaOptions{Extra: []kfake.Opt{kfake.Ports(0, 0, 0)}})
	cl := k.Cluster()
	brokers := cl.ListenAddrs()
	if len(brokers) != 3 {
		t.Fatalf("kfake brokers %v, want 3", brokers)
	}
	env := kafkaEnv(mq.URL(), brokers, "fi-kcluster")
	env["KAFKA_REPLICATION_FACTOR"] = "3"
	b := startBridge(t, bridgeBinary(t, false), "bridge", env)

	var mu sync.Mutex
	delivered := map[string]int{}
	connectMQTT(t, mq.URL(), "fi-kcluster-node", mqttOptions{
		Persistent: true,
		Filters:    []string{"org/o1/node/+/cmd"},
		OnMessage: func(p *paho.Publish) {
			if p.Properties == nil {
				return
			}
			mu.Lock()
			delivered[string(p.Properties.CorrelationData)]++
			mu.Unlock()
		},
	})
	producer, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	written := map[string]struct{}{}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond) // 50 commands/s over 10 nodes
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("kcluster-%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := producer.ProduceSync(ctx, &kgo.Record{Topic: "nr.commands", Key: fmt.Appendf(nil, "org/o1/node/n%d", i%10),
				Value: commandDoc(id, time.Now(), 2*time.Minute)}).FirstErr()
			cancel()
			if err != nil {
				t.Errorf("produce %s: %v", id, err)
				return
			}
			mu.Lock()
			written[id] = struct{}{}
			mu.Unlock()
		}
	}()
	load := startLoad(t, mq.URL(), defaultLoad("kcluster"))
	waitSent(t, load, 500)

	cl.ShufflePartitionLeaders()
	time.Sleep(2 * time.Second)
	moveTo := (cl.LeaderFor("nr.events", 0) + 1) % 3
	if err := cl.MoveTopicPartition("nr.events", 0, moveTo); err != nil {
		t.Fatalf("MoveTopicPartition: %v", err)
	}
	coordBefore := cl.CoordinatorFor("nr-bridge")
	cl.RehashCoordinators()
	time.Sleep(2 * time.Second)
	removed := cl.LeaderFor("nr.events", 1)
	if err := cl.RemoveNode(removed); err != nil {
		t.Fatalf("RemoveNode(%d): %v", removed, err)
	}
	time.Sleep(5 * time.Second)
	load.Stop()
	close(stop)
	<-done

	left := cl.ListenAddrs()
	sent := load.IDs()
	got := collectKafka(t, left, "nr.events", "Nr-Msg-Id", sent, 60*time.Second)
	r := count("kafka-cluster-3-leaders-coordinator-move-broker-removed", start, sent, got)
	r.Note = join(r.Note, fmt.Sprintf("all leaders shuffled, nr.events/0 moved to node %d, coordinator rehashed (was node %d), node %d removed", moveTo, coordBefore, removed))
	mustNotLoseBounded(t, r, sent, got, retriedBound(t, load, 0, "", b), b)

	mu.Lock()
	ids := make(map[string]struct{}, len(written))
	for id := range written {
		ids[id] = struct{}{}
	}
	mu.Unlock()
	var cmds map[string]int
	testserver.WaitFor(t, 60*time.Second, "every command delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		cmds = make(map[string]int, len(delivered))
		for id, n := range delivered {
			cmds[id] = n
		}
		return len(missing(ids, cmds, 1)) == 0
	})
	rc := count("kafka-cluster-3-commands-leaders-coordinator-move-broker-removed", start, ids, cmds)
	rc.Note = "commands consumed by the group while its coordinator and partition leaders moved"
	// A leader or coordinator move can fail a commit after its commands
	// were published: those are consumed and published again, at most one
	// poll.
	checkDuplicates(t, &rc, writtenTwiceBound{500, "one poll published and not committed (KAFKA_COMMAND_POLL_RECORDS 500)"}, b)
	mustNotLose(t, rc, ids, cmds)
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
}
