package ingest

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
)

// Receiver is the set of worker connections of one replica.
type Receiver struct {
	workers []*Worker
	starve  *starveWatch // nil with one worker
}

// NewReceiver creates cfg.Workers workers writing to sink and counting in
// m (nil counts nothing); Start connects them.
func NewReceiver(cfg *mqttconn.Config, sink bridge.Sink, log *slog.Logger, m bridge.Metrics) *Receiver {
	r := &Receiver{}
	for i := 1; i <= cfg.Workers; i++ {
		r.workers = append(r.workers, NewWorker(i, cfg, sink, log, m))
	}
	for _, w := range r.workers {
		w.peers = r.workers
	}
	r.starve = newStarveWatch(cfg, r.workers)
	return r
}

// Workers returns the workers, for readiness and metrics.
func (r *Receiver) Workers() []*Worker { return r.workers }

// Start starts every worker's connection loop.
func (r *Receiver) Start(ctx context.Context) error {
	for _, w := range r.workers {
		if err := w.Start(ctx); err != nil {
			return err
		}
	}
	r.starve.start(ctx)
	return nil
}

// Ready returns nil when every worker is connected and subscribed and none
// is stalled, else an error naming the workers that are not connected and,
// when a connection attempt failed, why (a refused TLS handshake, a bad
// password), and the workers that have not been able to acknowledge for
// longer than MQTT_STALL_TIMEOUT (Worker.Stalled): a connected worker that
// acknowledges nothing must not look healthy.
func (r *Receiver) Ready() error {
	var down, stalled []string
	for _, w := range r.workers {
		if !w.Ready() {
			if why := w.ConnectError(); why != "" {
				down = append(down, w.ClientID()+" ("+why+")")
			} else {
				down = append(down, w.ClientID())
			}
		}
		if err := w.Stalled(); err != nil {
			stalled = append(stalled, err.Error())
		}
	}
	var parts []string
	if len(down) > 0 {
		parts = append(parts, "mqtt workers not connected: "+strings.Join(down, ", "))
	}
	if len(stalled) > 0 {
		parts = append(parts, "mqtt workers stalled: "+strings.Join(stalled, "; "))
	}
	if len(parts) > 0 {
		return errors.New(strings.Join(parts, "; "))
	}
	return nil
}

// Close stops all workers in parallel; see Worker.Close.
func (r *Receiver) Close(ctx context.Context) error {
	r.starve.stop()
	var wg sync.WaitGroup
	errs := make([]error, len(r.workers))
	for i, w := range r.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = w.Close(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
