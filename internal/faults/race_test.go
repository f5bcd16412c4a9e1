//go:build faults

package faults

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// TestRaceUnderLoad runs the bridge built with -race under events,
// commands (HTTP and NR_COMMANDS), a 5 s NATS outage and a Mosquitto
// restart, then stops it with SIGTERM: the race detector must report
// nothing (it prints "WARNING: DATA RACE" and makes the exit code 66).
func TestRaceUnderLoad(t *testing.T) {
	bin := bridgeBinary(t, true)
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	env := natsEnv(mq.URL(), ns.URL(), "fi-race")
	env["NATS_COMMANDS_RETRY_MAX"] = "4s"
	b := startBridge(t, bin, "bridge-race", env)
	node := startCmdNode(t, mq.URL(), "race-node")
	_, js := connectNATS(t, ns.URL())
	waitStream(t, js, "NR_COMMANDS")
	load := startLoad(t, mq.URL(), defaultLoad("race"))
	cmds := startCmdLoad(t, b.addr, js, "race", 10)
	waitSent(t, load, 500)

	ns.Shutdown()
	time.Sleep(outage / 2)
	ns.Restart()
	time.Sleep(3 * time.Second)
	mq.Stop()
	time.Sleep(outage / 2)
	mq.Restart()
	b.waitReady(30 * time.Second)
	time.Sleep(3 * time.Second)
	load.Stop()
	cmds.Stop()
	// NATS outage: retried writes; Mosquitto restart: deliveries again.
	bound := retriedBound(t, load, 2*1000, "un-acked messages the broker may deliver again (MQTT_WORKERS 2 x MQTT_MAX_INFLIGHT 1000)", b)

	sent := load.IDs()
	got := collectNATS(t, js, "NR_EVENTS", "Nats-Msg-Id", sent, 60*time.Second)
	cmdSent := cmds.IDs()
	testserver.WaitFor(t, 60*time.Second, "every accepted command delivered", func() bool {
		return len(missing(cmdSent, node.delivered(), 1)) == 0
	})
	code := b.stop(syscall.SIGTERM)
	races := b.countLog("WARNING: DATA RACE")
	r := count("race-detector-under-load", start, sent, got)
	r.Note = join(r.Note, fmt.Sprintf("-race binary; NATS stop 5 s and Mosquitto restart 5 s; %d commands all delivered; %d data races; exit code %d",
		len(cmdSent), races, code))
	mustNotLoseBounded(t, r, sent, got, bound, b)
	if races > 0 || code != 0 {
		t.Errorf("race detector: %d reports, exit code %d", races, code)
	}
}
