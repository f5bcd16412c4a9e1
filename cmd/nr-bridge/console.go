package main

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/nr-bridge/nr-bridge/api"
	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/dlqtail"
	"github.com/nr-bridge/nr-bridge/internal/metrics"
)

// consoleBackbone gives the console and the listing route the backbone's
// status store and dead letters once it is open: the HTTP server starts
// before the backbone connects, and until then they answer 503 like the
// other status routes.
type consoleBackbone struct {
	bb   *atomic.Pointer[backbone]
	dlq  atomic.Pointer[api.DeadLetterReader]
	cfg  *Config
	log  *slog.Logger
	seen atomic.Pointer[backbone] // the backbone dlq was made for
}

// newConsole returns the console's dependencies: the flow of m's
// counters, and the backbone's store and dead letters read through bb.
func newConsole(bb *atomic.Pointer[backbone], m *metrics.Metrics, cfg *Config, log *slog.Logger) (*consoleBackbone, *api.Console) {
	c := &consoleBackbone{bb: bb, cfg: cfg, log: log}
	return c, &api.Console{Flow: metrics.NewFlow(m), Watcher: c, DeadLetters: c}
}

func (c *consoleBackbone) store() bridge.StatusStore {
	if b := c.bb.Load(); b != nil {
		return (*b).StatusStore()
	}
	return nil
}

// List implements api.CommandLister with the backbone's status store.
func (c *consoleBackbone) List(ctx context.Context, org string, limit int) ([]*bridge.CommandStatus, error) {
	l, ok := c.store().(api.CommandLister)
	if !ok {
		return nil, bridge.ErrStatusUnavailable
	}
	return l.List(ctx, org, limit)
}

// Watch implements api.StatusWatcher with the backbone's status store.
func (c *consoleBackbone) Watch(ctx context.Context, org, correlationID string) (<-chan *bridge.CommandStatus, error) {
	st := c.store()
	if st == nil {
		return nil, bridge.ErrStatusUnavailable
	}
	return st.Watch(ctx, org, correlationID)
}

// Recent implements api.DeadLetterReader: NR_DLQ on the NATS
// connection, or the Kafka dead-letter topic.
func (c *consoleBackbone) Recent(ctx context.Context, org string, limit int) ([]dlqtail.Entry, error) {
	b := c.bb.Load()
	if b == nil {
		return nil, bridge.ErrStatusUnavailable
	}
	r := c.dlq.Load()
	if r == nil || c.seen.Load() != b {
		var reader api.DeadLetterReader
		switch bb := (*b).(type) {
		case *natsBackbone:
			reader = dlqtail.NewNATS(bb.js, c.cfg.JetStream.DLQStream, c.cfg.JetStream.SubjectPrefix)
		case *kafkaBackbone:
			reader = dlqtail.NewKafka(c.cfg.Kafka, c.log)
		default:
			return nil, bridge.ErrStatusUnavailable
		}
		r = &reader
		c.dlq.Store(r)
		c.seen.Store(b)
	}
	return (*r).Recent(ctx, org, limit)
}
