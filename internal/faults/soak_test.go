//go:build faults

package faults

import (
	"flag"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

var (
	soakFor   = flag.Duration("soak", 0, "run TestSoak for this long (e.g. 1h); 0 skips it")
	soakEvery = flag.Duration("soak-every", time.Minute, "how often TestSoak samples RSS, goroutines and in-flight")
	soakRate  = flag.Int("soak-rate", 200, "events per second during TestSoak")
)

// soakSample is one reading of the bridge.
type soakSample struct {
	at         time.Duration
	rss        int64
	heap       float64 // go_memstats_heap_inuse_bytes
	goroutines float64 // go_goroutines
	inflight   float64 // nr_bridge_inflight_messages, all workers
	forwarded  float64 // nr_bridge_messages_forwarded_total
}

func (s soakSample) String() string {
	return fmt.Sprintf("t=%-6s rss=%3d MiB heap=%3.0f MiB goroutines=%4.0f inflight=%4.0f forwarded=%.0f",
		s.at.Round(time.Second), s.rss>>20, s.heap/(1<<20), s.goroutines, s.inflight, s.forwarded)
}

// TestSoak runs steady traffic (events at -soak-rate, commands over HTTP
// and NR_COMMANDS at 2/s each) for -soak, sampling the bridge every
// -soak-every. After a warm-up (the first quarter of the run) the
// goroutines, the RSS and the in-flight count must not grow: each later
// sample must stay within a margin of the warm-up's maximum. Not in CI:
//
//	go test -tags faults -count=1 -v -run Soak -timeout 2h ./internal/faults/ -soak=1h
func TestSoak(t *testing.T) {
	if *soakFor <= 0 {
		t.Skip("soak not requested (-soak=1h)")
	}
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	b := startBridge(t, bridgeBinary(t, false), "bridge", natsEnv(mq.URL(), ns.URL(), "fi-soak"))
	node := startCmdNode(t, mq.URL(), "soak-node")
	_, js := connectNATS(t, ns.URL())
	waitStream(t, js, "NR_COMMANDS")
	lc := defaultLoad("soak")
	lc.Rate = *soakRate
	load := startLoad(t, mq.URL(), lc)
	cmds := startCmdLoad(t, b.addr, js, "soak", 2)

	var samples []soakSample
	tick := time.NewTicker(*soakEvery)
	for end := time.Now().Add(*soakFor); time.Now().Before(end); {
		<-tick.C
		rss, err := b.rssBytes()
		if err != nil {
			t.Fatal(err)
		}
		m, err := b.metrics()
		if err != nil {
			t.Fatal(err)
		}
		s := soakSample{
			at: time.Since(start), rss: rss, heap: m["go_memstats_heap_inuse_bytes"], goroutines: m["go_goroutines"],
			inflight: m["nr_bridge_inflight_messages"], forwarded: m["nr_bridge_messages_forwarded_total"],
		}
		samples = append(samples, s)
		line := "soak " + s.String()
		t.Log(line)
		fmt.Println(line)
	}
	tick.Stop()
	load.Stop()
	cmds.Stop()

	sent := load.IDs()
	got := collectNATS(t, js, "NR_EVENTS", "Nats-Msg-Id", sent, 2*time.Minute)
	cmdSent := cmds.IDs()
	cmdLost := len(missing(cmdSent, node.delivered(), len(cmdSent)))
	r := count(fmt.Sprintf("soak-%s", *soakFor), start, sent, got)
	r.Note = join(r.Note, fmt.Sprintf("%d events/s; %d commands, %d lost", *soakRate, len(cmdSent), cmdLost))
	// No fault: a write is retried only when its ack timed out.
	mustNotLoseBounded(t, r, sent, got, retriedBound(t, load, 0, "", b), b)
	if cmdLost > 0 {
		t.Errorf("%d of %d commands not delivered", cmdLost, len(cmdSent))
	}

	// Growth after warm-up.
	warm := max(1, len(samples)/4)
	var peak soakSample
	for _, s := range samples[:warm] {
		peak.rss = max(peak.rss, s.rss)
		peak.goroutines = max(peak.goroutines, s.goroutines)
		peak.inflight = max(peak.inflight, s.inflight)
	}
	var grew []string
	for _, s := range samples[warm:] {
		if s.rss > peak.rss+peak.rss/4+8<<20 {
			grew = append(grew, fmt.Sprintf("RSS %d MiB at %s (warm-up peak %d MiB)", s.rss>>20, s.at.Round(time.Second), peak.rss>>20))
		}
		if s.goroutines > peak.goroutines+20 {
			grew = append(grew, fmt.Sprintf("%.0f goroutines at %s (warm-up peak %.0f)", s.goroutines, s.at.Round(time.Second), peak.goroutines))
		}
		if s.inflight > max(peak.inflight*2, 200) {
			grew = append(grew, fmt.Sprintf("%.0f in flight at %s (warm-up peak %.0f)", s.inflight, s.at.Round(time.Second), peak.inflight))
		}
	}
	if len(grew) > 0 {
		t.Errorf("growth after warm-up:\n%s", strings.Join(grew, "\n"))
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
}
