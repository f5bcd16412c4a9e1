//go:build faults

package faults

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// TestKafkaLostState wipes kfake while events flow and starts it empty on
// the same port, as a cluster that lost its state: the bridge recreates its
// topics without a restart, and every event sent from the wipe on arrives.
// Events Kafka had acknowledged before the wipe are gone with the cluster's
// state, not lost by the bridge, so they are not counted.
func TestKafkaLostState(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	b := startBridge(t, bridgeBinary(t, false), "bridge", kafkaEnv(mq.URL(), k.Brokers(), "fi-kafkalost"))
	before := startLoad(t, mq.URL(), defaultLoad("kafkalost-before"))
	waitSent(t, before, 500)

	before.Stop()
	k.RestartEmpty()
	after := startLoad(t, mq.URL(), defaultLoad("kafkalost-after"))
	time.Sleep(outage)
	after.Stop()

	sent := after.IDs()
	got := collectKafka(t, k.Brokers(), "nr.events", "Nr-Msg-Id", sent, 60*time.Second)
	r := count("kafka-lost-state", start, sent, got)
	r.Note = join(r.Note, "kfake wiped and started empty; events sent from the wipe on")
	mustNotLoseBounded(t, r, sent, got, retriedBound(t, after, 0, "", b), b)
	b.waitReady(10 * time.Second)
	if n := b.countLog("recreated"); n == 0 {
		t.Errorf("no log line says the topics were recreated")
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
}

// TestNATSStreamDeleted deletes NR_EVENTS while events flow: the bridge
// recreates it without a restart, and every event sent from the deletion on
// arrives.
func TestNATSStreamDeleted(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	b := startBridge(t, bridgeBinary(t, false), "bridge", natsEnv(mq.URL(), ns.URL(), "fi-natsdeleted"))
	before := startLoad(t, mq.URL(), defaultLoad("natsdeleted-before"))
	waitSent(t, before, 500)

	_, js := connectNATS(t, ns.URL())
	before.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, "NR_EVENTS"); err != nil {
		t.Fatal(err)
	}
	after := startLoad(t, mq.URL(), defaultLoad("natsdeleted-after"))
	time.Sleep(outage)
	after.Stop()

	sent := after.IDs()
	got := collectNATS(t, js, "NR_EVENTS", "Nats-Msg-Id", sent, 60*time.Second)
	r := count("nats-stream-deleted", start, sent, got)
	r.Note = join(r.Note, "NR_EVENTS deleted; events sent from the deletion on")
	mustNotLoseBounded(t, r, sent, got, retriedBound(t, after, 0, "", b), b)
	b.waitReady(10 * time.Second)
	if n := b.countLog("recreated"); n == 0 {
		t.Errorf("no log line says the stream was recreated")
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
}

// TestKafkaLostStateCommands wipes kfake under a bridge that consumes
// nr.commands: once the cluster is back (empty) and the bridge has
// recreated its topics, commands written to nr.commands reach the node.
func TestKafkaLostStateCommands(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	b := startBridge(t, bridgeBinary(t, false), "bridge", kafkaEnv(mq.URL(), k.Brokers(), "fi-kafkalostcmd"))
	node := startCmdNode(t, mq.URL(), "fi-kafkalostcmd-node")
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	send := func(id string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		r := &kgo.Record{Topic: "nr.commands", Key: []byte("org/o1/node/n1"), Value: commandDoc(id, time.Now(), time.Minute)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce %s: %v", id, err)
		}
	}
	send("before")
	testserver.WaitFor(t, 20*time.Second, "command before the wipe delivered", func() bool { return node.delivered()["before"] == 1 })

	k.RestartEmpty()
	cl.PurgeTopicsFromClient("nr.commands")
	// The events path notices the lost topics on its first write.
	ev := connectMQTT(t, mq.URL(), "fi-kafkalostcmd-ev", mqttOptions{})
	if err := ev.publishOnce("org/o1/node/n1/events", []byte("{}"), nil); err != nil {
		t.Fatal(err)
	}
	testserver.WaitFor(t, 30*time.Second, "topics recreated", func() bool { return b.countLog("recreated") > 0 })
	start := time.Now()
	const n = 20
	for i := range n {
		send(fmt.Sprintf("after-%d", i))
	}
	testserver.WaitFor(t, 60*time.Second, "commands after the wipe delivered", func() bool {
		got := node.delivered()
		for i := range n {
			if got[fmt.Sprintf("after-%d", i)] == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("commands after the wipe delivered within %v", time.Since(start).Round(time.Millisecond))
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
}

// TestNATSCommandsStreamDeleted deletes NR_COMMANDS (and with it the
// bridge's consumer) under a running bridge: the bridge recreates both and
// consumes again, so commands written once the stream is back reach the
// node without a restart.
func TestNATSCommandsStreamDeleted(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	b := startBridge(t, bridgeBinary(t, false), "bridge", natsEnv(mq.URL(), ns.URL(), "fi-natscmddeleted"))
	node := startCmdNode(t, mq.URL(), "fi-natscmddeleted-node")
	_, js := connectNATS(t, ns.URL())
	if err := streamCommand(js, "nr.org.o1.node.n1.cmd", commandDoc("before", time.Now(), time.Minute)); err != nil {
		t.Fatal(err)
	}
	testserver.WaitFor(t, 20*time.Second, "command before the deletion delivered", func() bool { return node.delivered()["before"] == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, "NR_COMMANDS"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testserver.WaitFor(t, 30*time.Second, "NR_COMMANDS recreated", func() bool {
		_, err := js.Stream(ctx, "NR_COMMANDS")
		return err == nil
	})
	const n = 20
	for i := range n {
		if err := streamCommand(js, "nr.org.o1.node.n1.cmd", commandDoc(fmt.Sprintf("after-%d", i), time.Now(), time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	testserver.WaitFor(t, 30*time.Second, "commands after the deletion delivered", func() bool {
		got := node.delivered()
		for i := range n {
			if got[fmt.Sprintf("after-%d", i)] == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("commands flowing again %v after the deletion", time.Since(start).Round(time.Millisecond))
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
}
