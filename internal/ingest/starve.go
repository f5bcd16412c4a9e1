package ingest

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
)

// starveSiblingsPerWorker times the number of workers is how many messages
// the sibling workers must have received while a worker received none
// before it counts as starved. A broker that picks a shared subscription's
// member at random (Mochi, Comqtt) passes over one of n workers k times in
// a row with probability (1-1/n)^k; with k = 20n that is below e^-20.
const starveSiblingsPerWorker = 20

// rxCounter counts what a worker received; onPublish adds to it and the
// starvation watch reads it.
type rxCounter struct{ n atomic.Uint64 }

func (c *rxCounter) add() { c.n.Add(1) }

// starveWatch reconnects a starved worker: one that is subscribed, holds
// nothing in flight, and has received nothing for MQTT_STARVE_TIMEOUT while
// its sibling workers on the same shared subscription kept receiving. A
// broker does that when it stops sending to one session and keeps its
// messages (Mochi's and Comqtt's send-quota stall, which a reconnect with
// the session cures: the broker then sends what it held). The Receiver
// owns it: start runs its goroutine, stop ends and waits for it.
type starveWatch struct {
	workers []*Worker
	after   time.Duration
	tick    time.Duration

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// starveState is what the watch remembers of one worker.
type starveState struct {
	count uint64    // the worker's received count at the last look
	since time.Time // when it last received, became ready or was reconnected
	peers uint64    // the siblings' received count at since
}

// newStarveWatch returns the watch of workers, or nil when it is off
// (MQTT_STARVE_TIMEOUT < 0 is refused by Validate; a configuration built
// without it, such as a test's, gets the default) or there is no sibling to
// compare with.
func newStarveWatch(cfg *mqttconn.Config, workers []*Worker) *starveWatch {
	if len(workers) < 2 {
		return nil
	}
	after := cfg.StarveAfter()
	return &starveWatch{
		workers: workers,
		after:   after,
		tick:    min(max(after/5, 10*time.Millisecond), time.Second),
	}
}

// start runs the watch until stop; ctx is only a parent for values.
func (s *starveWatch) start(ctx context.Context) {
	if s == nil {
		return
	}
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.run(ctx)
	}()
}

// stop ends the watch and waits for it.
func (s *starveWatch) stop() {
	if s == nil || s.cancel == nil {
		return
	}
	s.cancel()
	s.wg.Wait()
}

func (s *starveWatch) run(ctx context.Context) {
	t := time.NewTicker(s.tick)
	defer t.Stop()
	states := make([]starveState, len(s.workers))
	counts := make([]uint64, len(s.workers))
	now := time.Now()
	for {
		var total uint64
		for i, w := range s.workers {
			counts[i] = w.rx.n.Load()
			total += counts[i]
		}
		for i, w := range s.workers {
			if s.check(&states[i], w, counts[i], total-counts[i], now) {
				w.starved(now.Sub(states[i].since), total-counts[i]-states[i].peers)
				states[i] = starveState{count: counts[i], since: now, peers: total - counts[i]}
			}
		}
		select {
		case <-ctx.Done():
			return
		case now = <-t.C:
		}
	}
}

// check updates st with worker w's received count and its siblings' and
// reports whether w is starved now.
func (s *starveWatch) check(st *starveState, w *Worker, count, peers uint64, now time.Time) bool {
	if count != st.count || st.since.IsZero() || !w.Ready() || w.Inflight() > 0 {
		// Received, not subscribed (nothing can arrive), or holding
		// messages (the backbone, not the broker, sets its pace): start
		// over from here.
		*st = starveState{count: count, since: now, peers: peers}
		return false
	}
	return now.Sub(st.since) >= s.after && peers-st.peers >= uint64(starveSiblingsPerWorker*len(s.workers))
}

// starved logs and counts that the worker was starved for idle while its
// siblings received peers messages, and drops its connection: autopaho
// reconnects with the session (CleanStart false), and the broker sends what
// it held for it.
func (w *Worker) starved(idle time.Duration, peers uint64) {
	w.log.Warn("MQTT worker starved: the broker sent it nothing while its sibling workers kept receiving, and it holds nothing un-acked; "+
		"reconnecting with its session (Mochi and Comqtt stop sending to a client whose send quota ran out, docs/compatibility.md)",
		"idle", idle.Round(time.Millisecond).String(), "sibling_messages", peers)
	w.metrics.WorkerStarved(w.clientID)
	w.mu.Lock()
	cm := w.cm
	w.mu.Unlock()
	if cm != nil && w.ctx.Err() == nil {
		// Closes the network connection, as a network failure would; the
		// session and its queued messages stay on the broker, and autopaho
		// reconnects after MQTT_RECONNECT_MIN.
		cm.TerminateConnectionForTest()
	}
}
