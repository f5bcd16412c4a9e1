//go:build faults

package faults

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// ackWatch checks that the bridge acknowledges nothing to MQTT while the
// backbone cannot have written it: it reads nr_bridge_acks_sent_total once
// the fault is established and again right before it ends.
type ackWatch struct {
	b     *bridgeProc
	first float64
}

func watchAcks(b *bridgeProc) *ackWatch {
	return &ackWatch{b: b, first: b.metric("nr_bridge_acks_sent_total")}
}

func (w *ackWatch) check(t *testing.T, what string) {
	t.Helper()
	if last := w.b.metric("nr_bridge_acks_sent_total"); last != w.first {
		t.Errorf("%s: %v MQTT acks sent while the backbone was down", what, last-w.first)
	}
}

// TestNATSOutage stops the in-process NATS server for 10 s under load and
// restarts it with the same store: the bridge stops acknowledging, the
// broker holds the messages, and every event arrives afterwards.
func TestNATSOutage(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	b := startBridge(t, bridgeBinary(t, false), "bridge", natsEnv(mq.URL(), ns.URL(), "fi-natsstop"))
	load := startLoad(t, mq.URL(), defaultLoad("natsstop"))
	waitSent(t, load, 500)

	ns.Shutdown()
	time.Sleep(time.Second)
	acks := watchAcks(b)
	time.Sleep(outage - time.Second)
	acks.check(t, "NATS stopped")
	ns.Restart()
	b.waitReady(30 * time.Second)
	time.Sleep(3 * time.Second)
	load.Stop()

	_, js := connectNATS(t, ns.URL())
	sent := load.IDs()
	got := collectNATS(t, js, "NR_EVENTS", "Nats-Msg-Id", sent, 60*time.Second)
	mustNotLoseBounded(t, count("nats-stop-10s", start, sent, got), sent, got, retriedBound(t, load, 0, "", b), b)
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
}

// TestNATSHang freezes the nats-server binary with SIGSTOP for 10 s: the
// connection stays open but nothing is answered. The bridge must not ack
// what was not written and must recover by itself after SIGCONT.
func TestNATSHang(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	ns := testserver.StartNATSProcess(t, testserver.NATSOptions{})
	b := startBridge(t, bridgeBinary(t, false), "bridge", natsEnv(mq.URL(), ns.URL(), "fi-natshang"))
	pid := b.pid()
	load := startLoad(t, mq.URL(), defaultLoad("natshang"))
	waitSent(t, load, 500)

	ns.Pause()
	time.Sleep(time.Second)
	acks := watchAcks(b)
	time.Sleep(outage - time.Second)
	acks.check(t, "NATS paused")
	ns.Resume()
	time.Sleep(3 * time.Second)
	load.Stop()

	_, js := connectNATS(t, ns.URL())
	sent := load.IDs()
	got := collectNATS(t, js, "NR_EVENTS", "Nats-Msg-Id", sent, 60*time.Second)
	r := count("nats-sigstop-10s", start, sent, got)
	r.Note = join(r.Note, fmt.Sprintf("nats-server %s", "2.9.10 binary"))
	mustNotLoseBounded(t, r, sent, got, retriedBound(t, load, 0, "", b), b)
	if !b.running() || b.pid() != pid {
		t.Errorf("the bridge did not recover by itself: restarted or exited")
	}
	b.waitReady(10 * time.Second)
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
}

// TestKafkaProduceErrors makes kfake answer every produce to nr.events with
// NOT_ENOUGH_REPLICAS for 10 s (a retriable error: franz-go keeps retrying)
// while events flow.
func TestKafkaProduceErrors(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	b := startBridge(t, bridgeBinary(t, false), "bridge", kafkaEnv(mq.URL(), k.Brokers(), "fi-kafkaerr"))
	load := startLoad(t, mq.URL(), defaultLoad("kafkaerr"))
	waitSent(t, load, 500)

	fault := k.Cluster().Fault(kfake.Fault{
		Keys:  []kmsg.Key{kmsg.Produce},
		Topic: "nr.events",
		Err:   kerr.NotEnoughReplicas,
		Count: -1,
	})
	time.Sleep(time.Second)
	acks := watchAcks(b)
	time.Sleep(outage - time.Second)
	acks.check(t, "Kafka produce failing")
	hits := fault.Hits()
	fault.Remove()
	time.Sleep(3 * time.Second)
	load.Stop()

	sent := load.IDs()
	got := collectKafka(t, k.Brokers(), "nr.events", "Nr-Msg-Id", sent, 60*time.Second)
	r := count("kafka-produce-errors-10s", start, sent, got)
	r.Note = join(r.Note, fmt.Sprintf("%d produce requests failed", hits))
	mustNotLoseBounded(t, r, sent, got, retriedBound(t, load, 0, "", b), b)
	if hits == 0 {
		t.Errorf("the fault never fired")
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
}

// TestKafkaRestart closes kfake for 10 s and starts it again on the same
// port from the same data dir.
func TestKafkaRestart(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	b := startBridge(t, bridgeBinary(t, false), "bridge", kafkaEnv(mq.URL(), k.Brokers(), "fi-kafkarestart"))
	load := startLoad(t, mq.URL(), defaultLoad("kafkarestart"))
	waitSent(t, load, 500)

	k.Close()
	time.Sleep(time.Second)
	acks := watchAcks(b)
	time.Sleep(outage - time.Second)
	acks.check(t, "Kafka down")
	k.Restart()
	b.waitReady(30 * time.Second)
	time.Sleep(3 * time.Second)
	load.Stop()

	sent := load.IDs()
	got := collectKafka(t, k.Brokers(), "nr.events", "Nr-Msg-Id", sent, 60*time.Second)
	mustNotLoseBounded(t, count("kafka-restart-10s", start, sent, got), sent, got, retriedBound(t, load, 0, "", b), b)
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
}

func join(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}
