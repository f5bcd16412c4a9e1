//go:build faults

package faults

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// TestMosquittoRestart stops Mosquitto (persistence on) for 10 s under
// load and starts it again: the agents and the bridge reconnect, the
// bridge's sessions and their queued messages survive, and nothing is lost.
//
// Mosquitto 2.0 does not persist shared subscriptions (persist__subs_save
// writes a node's plain subscriptions, not its shared ones): after the
// restart, until the bridge's workers have reconnected and subscribed
// again, an event has no subscriber and the agent gets PUBACK 0x10 (no
// matching subscribers). The agents here publish such an event again, as
// agents should; TestMosquittoRestartIgnoring0x10 shows the loss when they
// do not.
func TestMosquittoRestart(t *testing.T) {
	r, sent, got, _ := mosquittoRestart(t, "mosquitto-restart-10s", false)
	mustNotLose(t, r, sent, got)
}

// TestMosquittoRestartIgnoring0x10 is TestMosquittoRestart with agents that
// take PUBACK 0x10 as success: what they publish between the broker's
// restart and the bridge's resubscription is lost, by the broker. It
// expects that loss, and exactly the events answered 0x10.
func TestMosquittoRestartIgnoring0x10(t *testing.T) {
	r, sent, got, noSubs := mosquittoRestart(t, "mosquitto-restart-agents-ignore-0x10 (expected loss)", true)
	record(t, r)
	if r.Lost == 0 {
		t.Logf("no event was published in the window between the restart and the resubscription this time")
	}
	// lost = the 0x10 answers, ID for ID: every event answered 0x10 is
	// lost (the broker discarded it) and nothing else is.
	var lostOther, arrived0x10 []string
	for id := range sent {
		switch _, answered := noSubs[id]; {
		case got[id] == 0 && !answered:
			lostOther = append(lostOther, id)
		case got[id] > 0 && answered:
			arrived0x10 = append(arrived0x10, id)
		}
	}
	if r.Lost != len(noSubs) || len(lostOther) > 0 || len(arrived0x10) > 0 {
		t.Errorf("lost %d events, %d answered 0x10: lost without a 0x10 %v; answered 0x10 and arrived %v",
			r.Lost, len(noSubs), first(lostOther, 10), first(arrived0x10, 10))
	}
}

// first returns up to n of ids, sorted.
func first(ids []string, n int) []string {
	sort.Strings(ids)
	return ids[:min(n, len(ids))]
}

// mosquittoRestart runs the broker restart under load and returns the
// result (checked against its bound on what may be written twice), the sent
// and arrived IDs, and the IDs the agents took a 0x10 for (only with
// ignoreNoSubscribers).
func mosquittoRestart(t *testing.T, name string, ignoreNoSubscribers bool) (result, map[string]struct{}, map[string]int, map[string]struct{}) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	b := startBridge(t, bridgeBinary(t, false), "bridge", natsEnv(mq.URL(), ns.URL(), "fi-mqrestart"))
	lc := defaultLoad("mqrestart")
	lc.IgnoreNoSubscribers = ignoreNoSubscribers
	load := startLoad(t, mq.URL(), lc)
	waitSent(t, load, 500)
	subscribed := b.countLog(`"msg":"MQTT subscribed"`)

	mq.Stop()
	time.Sleep(outage)
	mq.Restart()
	b.waitReady(30 * time.Second)
	time.Sleep(3 * time.Second)
	load.Stop()
	// Messages the bridge had not acknowledged when the broker stopped are
	// delivered again after the restart; those it had written are written
	// twice.
	bound := retriedBound(t, load, 2*1000, "un-acked messages the broker may deliver again (MQTT_WORKERS 2 x MQTT_MAX_INFLIGHT 1000)", b)

	_, js := connectNATS(t, ns.URL())
	sent := load.IDs()
	wait := 60 * time.Second
	if ignoreNoSubscribers {
		wait = 10 * time.Second
	}
	got := collectNATS(t, js, "NR_EVENTS", "Nats-Msg-Id", sent, wait)
	r := count(name, start, sent, got)
	r.Note = join(r.Note, fmt.Sprintf("%d PUBACKs 0x10 no matching subscribers", load.NoSubscribers()))
	if n, err := load.Failed(); n > 0 {
		r.Note = join(r.Note, fmt.Sprintf("%d publishes never acknowledged: %v", n, err))
	}
	checkDuplicates(t, &r, bound, b)
	if again := b.countLog(`"msg":"MQTT subscribed"`) - subscribed; again < 2 {
		t.Errorf("the workers subscribed %d times after the restart, want 2", again)
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
	return r, sent, got, load.NoSubscriberIDs()
}

// TestBrokerQueueLimitLoses shows a loss that is the broker's, not the
// bridge's: with max_queued_messages 100 (and max_inflight_messages 100),
// a 10 s NATS outage overflows the queue of each bridge session and
// Mosquitto silently drops QoS 1 messages it had already acknowledged to
// the agents. The setting that prevents it is a max_queued_messages sized
// for the outage (deploy/mosquitto/mosquitto.conf: 100000), as in every
// other scenario. The bridge advertises a Receive Maximum of 100 here: with
// the default 65,535 Mosquitto 2.0 lets an MQTT v5 client's Receive Maximum
// override max_inflight_messages, keeps the backlog in flight instead of in
// the queue, and drops nothing (measured: 4,008 of 4,008 stored).
func TestBrokerQueueLimitLoses(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true, MaxQueuedMessages: 100, MaxInflightMessages: 100,
		ExtraConfig: []string{"sys_interval 1"}})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	env := natsEnv(mq.URL(), ns.URL(), "fi-queuelimit")
	env["MQTT_RECEIVE_MAXIMUM"] = "100"
	b := startBridge(t, bridgeBinary(t, false), "bridge", env)
	load := startLoad(t, mq.URL(), defaultLoad("queuelimit"))
	waitSent(t, load, 500)

	ns.Shutdown()
	time.Sleep(outage)
	ns.Restart()
	b.waitReady(30 * time.Second)
	time.Sleep(3 * time.Second)
	load.Stop()

	_, js := connectNATS(t, ns.URL())
	sent := load.IDs()
	got := collectNATS(t, js, "NR_EVENTS", "Nats-Msg-Id", sent, 15*time.Second)
	r := count("mosquitto-max-queued-100 (expected loss)", start, sent, got)
	checkDuplicates(t, &r, retriedBound(t, load, 0, "", b), b)
	logData, _ := os.ReadFile(mq.LogPath())
	notices := strings.Count(string(logData), "Outgoing messages are being dropped for client fi-queuelimit")
	// The broker's own count of the QoS 1 messages it dropped for a full
	// queue ($SYS, published every sys_interval, retained).
	brokerDropped := sysCounter(t, mq.URL(), "$SYS/broker/publish/messages/dropped")
	republished := load.Republished()
	r.Note = join(r.Note, fmt.Sprintf("broker dropped %d (its $SYS counter), %d dropping notices for the bridge's sessions, %d agent re-publishes", brokerDropped, notices, republished))
	record(t, r)
	if r.Lost == 0 {
		t.Errorf("expected Mosquitto to drop messages past max_queued_messages 100, lost nothing")
	}
	if notices == 0 {
		t.Errorf("no \"Outgoing messages are being dropped\" for the bridge's sessions in the Mosquitto log")
	}
	// Every loss is one the broker dropped: a loss by the bridge would make
	// lost exceed the broker's count. A dropped message can still arrive
	// when its agent published it again (its first attempt got no answer).
	if r.Lost > brokerDropped || brokerDropped > r.Lost+republished {
		t.Errorf("lost %d events, the broker dropped %d (%d agent re-publishes): want lost <= dropped <= lost + re-publishes",
			r.Lost, brokerDropped, republished)
	}
	if n := b.countLog(`"level":"ERROR"`); n > 0 {
		t.Errorf("the bridge logged %d errors", n)
	}
}

// sysCounter reads a retained $SYS counter of the broker at url (it needs
// sys_interval set), failing the test when none comes within 10 s.
func sysCounter(t *testing.T, url, topic string) int {
	t.Helper()
	values := make(chan string, 16)
	connectMQTT(t, url, "fi-sys-reader", mqttOptions{
		Filters: []string{topic},
		OnMessage: func(p *paho.Publish) {
			select {
			case values <- string(p.Payload):
			default:
			}
		},
	})
	select {
	case v := <-values:
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			t.Fatalf("%s = %q: %v", topic, v, err)
		}
		return n
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s from the broker within 10 s", topic)
	}
	return 0
}

// TestDeployConfigQueueLimit checks that the broker config we ship keeps
// the queue limit that carries the bridge through an outage.
func TestDeployConfigQueueLimit(t *testing.T) {
	data, err := os.ReadFile("../../deploy/mosquitto/mosquitto.conf")
	if err != nil {
		t.Fatalf("deploy/mosquitto/mosquitto.conf: %v", err)
	}
	settings := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && !strings.HasPrefix(f[0], "#") {
			settings[f[0]] = f[1]
		}
	}
	if n, err := strconv.Atoi(settings["max_queued_messages"]); err != nil || n < 10000 {
		t.Errorf("max_queued_messages = %q, want at least 10000 (and never 0)", settings["max_queued_messages"])
	}
	if settings["persistence"] != "true" {
		t.Errorf("persistence = %q, want true", settings["persistence"])
	}
}
