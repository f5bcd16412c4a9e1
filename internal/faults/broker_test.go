//go:build faults

package faults

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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
	r, sent, got := mosquittoRestart(t, "mosquitto-restart-10s", false)
	mustNotLose(t, r, sent, got)
}

// TestMosquittoRestartIgnoring0x10 is TestMosquittoRestart with agents that
// take PUBACK 0x10 as success: what they publish between the broker's
// restart and the bridge's resubscription is lost, by the broker. It
// expects that loss, and exactly the events answered 0x10.
func TestMosquittoRestartIgnoring0x10(t *testing.T) {
	r, _, _ := mosquittoRestart(t, "mosquitto-restart-agents-ignore-0x10 (expected loss)", true)
	record(t, r)
	if r.Lost == 0 {
		t.Logf("no event was published in the window between the restart and the resubscription this time")
	}
}

func mosquittoRestart(t *testing.T, name string, ignoreNoSubscribers bool) (result, map[string]struct{}, map[string]int) {
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
	if ignoreNoSubscribers && r.Lost > load.NoSubscribers() {
		t.Errorf("lost %d events, more than the %d answered 0x10", r.Lost, load.NoSubscribers())
	}
	if again := b.countLog(`"msg":"MQTT subscribed"`) - subscribed; again < 2 {
		t.Errorf("the workers subscribed %d times after the restart, want 2", again)
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
	return r, sent, got
}

// TestBrokerQueueLimitLoses shows a loss that is the broker's, not the
// bridge's: with max_queued_messages 100 (and max_inflight_messages 100),
// a 10 s NATS outage overflows the queue of each bridge session and
// Mosquitto silently drops QoS 1 messages it had already acknowledged to
// the agents. The setting that prevents it is a max_queued_messages sized
// for the outage (deploy/mosquitto/mosquitto.conf: 100000), as in every
// other scenario.
func TestBrokerQueueLimitLoses(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true, MaxQueuedMessages: 100, MaxInflightMessages: 100})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	b := startBridge(t, bridgeBinary(t, false), "bridge", natsEnv(mq.URL(), ns.URL(), "fi-queuelimit"))
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
	logData, _ := os.ReadFile(mq.LogPath())
	dropped := strings.Contains(string(logData), "Outgoing messages are being dropped")
	r.Note = join(r.Note, fmt.Sprintf("broker logged dropping: %v", dropped))
	record(t, r)
	if r.Lost == 0 {
		t.Errorf("expected Mosquitto to drop messages past max_queued_messages 100, lost nothing")
	}
	if !dropped {
		t.Errorf("no \"Outgoing messages are being dropped\" in the Mosquitto log")
	}
	if n := b.countLog(`"level":"ERROR"`); n > 0 {
		t.Errorf("the bridge logged %d errors", n)
	}
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
