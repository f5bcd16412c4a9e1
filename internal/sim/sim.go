package sim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/redact"
)

// Summary is the outcome of a run.
type Summary struct {
	RunID string
	Nodes int
	Conns int
	// Elapsed is the sending phase: from the first event until the last one
	// was answered (with Count) or the run ended.
	Elapsed time.Duration

	// EventsSent counts events published: with QoS 1, each one the broker
	// answered, successfully or not.
	EventsSent uint64
	// EventsAcked counts QoS 1 events with a successful PUBACK.
	EventsAcked uint64
	// EventsFailed counts events whose publish failed (no PUBACK in
	// PublishTimeout, an error reason code, the connection lost after
	// sending).
	EventsFailed uint64
	// Rate is events acknowledged (QoS 1) or sent (QoS 0) per second of
	// Elapsed.
	Rate float64

	// CommandsReceived counts commands, once per target node (a broadcast
	// to an org counts once for each of its nodes).
	CommandsReceived uint64
	// RepliesSent counts replies published (acknowledged at QoS 1).
	RepliesSent uint64
	// ReplyErrors counts replies that could not be published.
	ReplyErrors uint64

	// Latency is publish to PUBACK of QoS 1 events.
	Latency Latency
}

// Run connects the fleet, waits until every connection is subscribed to its
// nodes' command topics, then sends events at the configured rate and
// answers commands until Duration elapses, every node has sent Count events
// (without Duration), or ctx ends. It then lets in-flight publishes and
// queued replies finish (each bounded by PublishTimeout), disconnects, and
// returns the summary. Ending by ctx is a normal stop, not an error; errors
// are a bad Config (wrapping ErrConfig) or a fleet that did not connect
// within ConnectTimeout.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	cfg = cfg.withGenerated()
	if err := cfg.validate(); err != nil {
		return Summary{}, err
	}
	log := cfg.Logger
	nodes := cfg.fleet()
	st := &stats{}
	conns := make([]*conn, cfg.Conns)
	for k := range conns {
		var share []*node
		for i := k; i < len(nodes); i += cfg.Conns {
			share = append(share, nodes[i])
		}
		conns[k] = newConn(k+1, &cfg, st, share)
	}
	stopAll := func() {
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() { c.stop(ctx) })
		}
		wg.Wait()
	}
	for _, c := range conns {
		if err := c.start(ctx); err != nil {
			stopAll()
			return Summary{}, err
		}
	}
	if err := waitReady(ctx, conns, cfg.ConnectTimeout); err != nil {
		stopAll()
		if ctx.Err() != nil {
			return Summary{RunID: cfg.RunID, Nodes: cfg.Nodes, Conns: cfg.Conns}, nil
		}
		return Summary{}, err
	}
	answering := 0
	for _, n := range nodes {
		if n.answers {
			answering++
		}
	}
	log.Info("fleet connected", "url", redact.URLs(cfg.URL), "run_id", cfg.RunID, "orgs", cfg.Orgs, "nodes", cfg.Nodes,
		"answering", answering, "conns", cfg.Conns, "rate_per_node", cfg.Rate, "qos", cfg.QoS, "size", cfg.Size)
	if cfg.OnReady != nil {
		cfg.OnReady()
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.Duration > 0 {
		var c2 context.CancelFunc
		runCtx, c2 = context.WithTimeout(runCtx, cfg.Duration)
		defer c2()
	}
	start := time.Now()
	for _, c := range conns {
		c.startEvents(runCtx)
	}
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if cfg.Progress > 0 {
		progressWG.Go(func() { reportProgress(&cfg, st, conns, start, progressDone) })
	}

	eventsDone := make(chan struct{})
	var sendEnd time.Time // written before eventsDone is closed
	go func() {
		for _, c := range conns {
			<-c.events
		}
		sendEnd = time.Now()
		close(eventsDone)
	}()
	if cfg.Count > 0 && cfg.Duration == 0 && cfg.Rate > 0 {
		select {
		case <-eventsDone:
		case <-runCtx.Done():
		}
	} else {
		<-runCtx.Done()
	}
	cancel()
	<-eventsDone
	elapsed := sendEnd.Sub(start)
	close(progressDone)
	progressWG.Wait()
	stopAll()

	s := Summary{
		RunID:            cfg.RunID,
		Nodes:            cfg.Nodes,
		Conns:            cfg.Conns,
		Elapsed:          elapsed,
		EventsSent:       st.sent.Load(),
		EventsAcked:      st.acked.Load(),
		EventsFailed:     st.failed.Load(),
		CommandsReceived: st.commands.Load(),
		RepliesSent:      st.replies.Load(),
		ReplyErrors:      st.replyErrors.Load(),
		Latency:          st.latency.snapshot().latency(),
	}
	done := s.EventsAcked
	if cfg.QoS == 0 {
		done = s.EventsSent
	}
	if secs := elapsed.Seconds(); secs > 0 {
		s.Rate = float64(done) / secs
	}
	return s, nil
}

// waitReady waits until every connection has subscribed, or fails after
// timeout with the last connection error.
func waitReady(ctx context.Context, conns []*conn, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for _, c := range conns {
		select {
		case <-c.ready:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			reason := "not subscribed yet"
			if p := c.connErr.Load(); p != nil {
				reason = *p
			}
			return fmt.Errorf("connect to %s: %s not ready after %s: %w", redact.URLs(c.cfg.URL), c.clientID, timeout, errors.New(reason))
		}
	}
	return nil
}

// reportProgress logs one line every cfg.Progress until done is closed:
// totals, the rates and latency of the last interval, and connections up.
func reportProgress(cfg *Config, st *stats, conns []*conn, start time.Time, done <-chan struct{}) {
	tick := time.NewTicker(cfg.Progress)
	defer tick.Stop()
	prevSnap := st.latency.snapshot()
	prevDone, prevTime := uint64(0), start
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			snap := st.latency.snapshot()
			interval := snap.since(prevSnap).latency()
			doneNow := st.acked.Load()
			if cfg.QoS == 0 {
				doneNow = st.sent.Load()
			}
			rate := float64(doneNow-prevDone) / now.Sub(prevTime).Seconds()
			up := 0
			for _, c := range conns {
				if c.up.Load() {
					up++
				}
			}
			cfg.Logger.Info("progress",
				"elapsed", now.Sub(start).Round(time.Second).String(),
				"sent", st.sent.Load(), "acked", st.acked.Load(), "failed", st.failed.Load(),
				"inflight", st.inflight.Load(), "rate", fmt.Sprintf("%.1f/s", rate),
				"p50", interval.P50.String(), "p99", interval.P99.String(),
				"commands", st.commands.Load(), "replies", st.replies.Load(),
				"conns_up", up)
			prevSnap, prevDone, prevTime = snap, doneNow, now
		}
	}
}
