//go:build faults

package faults

import (
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// rssCeiling is the bound the bridge's resident memory must stay under in
// the slow-backbone scenario: the Kubernetes memory request
// (deploy/kubernetes/statefulset.yaml, 128Mi). A worker holds at most
// MQTT_MAX_INFLIGHT messages and the sink at most NATS_PUBLISH_WINDOW, so
// a slow backbone must show up as broker queues, not as bridge memory.
const rssCeiling = 128 << 20

// sampler polls the bridge's RSS and in-flight gauge until stopped.
type sampler struct {
	b    *bridgeProc
	stop chan struct{}
	wg   sync.WaitGroup

	mu          sync.Mutex
	maxRSS      int64
	maxInflight float64
	errs        int
}

func sample(b *bridgeProc, every time.Duration) *sampler {
	s := &sampler{b: b, stop: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			rss, err := b.rssBytes()
			m, merr := b.metrics()
			s.mu.Lock()
			if err == nil {
				s.maxRSS = max(s.maxRSS, rss)
			}
			if merr == nil {
				s.maxInflight = max(s.maxInflight, m["nr_bridge_inflight_messages"])
			} else {
				s.errs++
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// Stop stops sampling and returns the highest RSS and in-flight count seen,
// and how many /metrics scrapes failed.
func (s *sampler) Stop() (maxRSS int64, maxInflight float64, metricsErrs int) {
	close(s.stop)
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxRSS, s.maxInflight, s.errs
}

// TestSlowBackbone puts the NATS connection behind a proxy that lets
// through 64 KiB/s, a fifth of what the load needs, for 20 s. The bridge
// must keep its memory bounded (the broker queues instead), keep its MQTT
// connections (keepalive 5 s here, so a reader stuck for 7.5 s would show),
// and lose nothing once the link is fast again.
func TestSlowBackbone(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	proxy := startProxy(t, fmt.Sprintf("127.0.0.1:%d", ns.Port()))
	env := natsEnv(mq.URL(), "nats://"+proxy.Addr(), "fi-slow")
	env["MQTT_KEEPALIVE"] = "5s"
	const workers, maxInflight = 2, 1000
	env["MQTT_WORKERS"] = fmt.Sprint(workers)
	env["MQTT_MAX_INFLIGHT"] = fmt.Sprint(maxInflight)
	b := startBridge(t, bridgeBinary(t, false), "bridge", env)
	lc := defaultLoad("slow")
	lc.PayloadBytes = 1000
	load := startLoad(t, mq.URL(), lc)
	waitSent(t, load, 500)
	smp := sample(b, 250*time.Millisecond)

	before := b.metric("nr_bridge_messages_forwarded_total")
	retriesBefore := b.metric("nr_bridge_write_retries_total")
	proxy.SetRate(64 << 10)
	time.Sleep(2 * outage)
	during := b.metric("nr_bridge_messages_forwarded_total") - before
	retries := b.metric("nr_bridge_write_retries_total") - retriesBefore
	proxy.SetRate(0)
	time.Sleep(3 * time.Second)
	load.Stop()

	_, js := connectNATS(t, ns.URL())
	sent := load.IDs()
	got := collectNATS(t, js, "NR_EVENTS", "Nats-Msg-Id", sent, 90*time.Second)
	maxRSS, inflightPeak, metricsErrs := smp.Stop()
	r := count("slow-backbone-nats-64KiBps-20s", start, sent, got)
	r.Note = join(r.Note, fmt.Sprintf("max RSS %d MiB, max in-flight %.0f, %d /metrics errors, %.0f forwarded and %.0f write retries while slow",
		maxRSS>>20, inflightPeak, metricsErrs, during, retries))
	mustNotLoseBounded(t, r, sent, got, retriedBound(t, load, 0, "", b), b)
	if inflightPeak == 0 {
		t.Errorf("nr_bridge_inflight_messages never above 0 while the backbone was slow (or never served)")
	}
	if inflightPeak > workers*maxInflight {
		t.Errorf("%.0f messages in flight at the peak, more than MQTT_WORKERS %d x MQTT_MAX_INFLIGHT %d", inflightPeak, workers, maxInflight)
	}
	if metricsErrs != 0 {
		t.Errorf("%d scrapes of /metrics failed while the backbone was slow", metricsErrs)
	}
	if maxRSS == 0 || maxRSS > rssCeiling {
		t.Errorf("bridge RSS peaked at %d MiB, ceiling %d MiB", maxRSS>>20, rssCeiling>>20)
	}
	if n := b.countLog("MQTT connection lost"); n > 0 {
		t.Errorf("%d MQTT connections lost while the backbone was slow", n)
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
}
