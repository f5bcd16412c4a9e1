//go:build faults

package faults

import (
	"syscall"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// TestReplicaCrash runs two replicas in one shared subscription group,
// SIGKILLs one under load and restarts it 10 s later with the same client
// ID: the broker queued its share in its sessions, and it gets it back.
func TestReplicaCrash(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	bin := bridgeBinary(t, false)
	r1 := startBridge(t, bin, "replica-1", natsEnv(mq.URL(), ns.URL(), "fi-crash-1"))
	r2 := startBridge(t, bin, "replica-2", natsEnv(mq.URL(), ns.URL(), "fi-crash-2"))
	load := startLoad(t, mq.URL(), defaultLoad("crash"))
	waitSent(t, load, 1000)

	if code := r1.stop(syscall.SIGKILL); code != -1 {
		t.Errorf("exit code after SIGKILL = %d", code)
	}
	time.Sleep(outage)
	r1.start()
	time.Sleep(3 * time.Second)
	load.Stop()

	_, js := connectNATS(t, ns.URL())
	sent := load.IDs()
	got := collectNATS(t, js, "NR_EVENTS", "Nats-Msg-Id", sent, 60*time.Second)
	// The killed replica's un-acked messages are delivered again, and
	// those it had written are written twice.
	mustNotLoseBounded(t, count("replica-sigkill-restart", start, sent, got), sent, got,
		retriedBound(t, load, 2*1000, "un-acked messages the broker may deliver again (MQTT_WORKERS 2 x MQTT_MAX_INFLIGHT 1000)", r1, r2), r1, r2)
	for _, r := range []*bridgeProc{r1, r2} {
		if code := r.stop(syscall.SIGTERM); code != 0 {
			t.Errorf("%s: exit code after SIGTERM = %d", r.name, code)
		}
	}
}

// TestRollingRestart restarts two replicas one after the other with
// SIGTERM, each waiting for the other to be ready, as a rolling update
// does.
func TestRollingRestart(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	bin := bridgeBinary(t, false)
	replicas := []*bridgeProc{
		startBridge(t, bin, "replica-1", natsEnv(mq.URL(), ns.URL(), "fi-rolling-1")),
		startBridge(t, bin, "replica-2", natsEnv(mq.URL(), ns.URL(), "fi-rolling-2")),
	}
	load := startLoad(t, mq.URL(), defaultLoad("rolling"))
	waitSent(t, load, 1000)

	for _, r := range replicas {
		if code := r.stop(syscall.SIGTERM); code != 0 {
			t.Errorf("%s: exit code after SIGTERM = %d", r.name, code)
		}
		time.Sleep(2 * time.Second) // a pod's restart is not instant either
		r.start()
		time.Sleep(2 * time.Second)
	}
	time.Sleep(2 * time.Second)
	load.Stop()

	_, js := connectNATS(t, ns.URL())
	sent := load.IDs()
	got := collectNATS(t, js, "NR_EVENTS", "Nats-Msg-Id", sent, 60*time.Second)
	// A replica stopped with SIGTERM waits for its writes and acks them:
	// nothing is delivered again, nothing written twice.
	mustNotLoseBounded(t, count("rolling-restart-sigterm", start, sent, got), sent, got, exactlyOnce, replicas...)
	for _, r := range replicas {
		if code := r.stop(syscall.SIGTERM); code != 0 {
			t.Errorf("%s: exit code after SIGTERM = %d", r.name, code)
		}
	}
}
