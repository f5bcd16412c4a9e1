package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/sinks/natsjs"
)

// natsBackbone is NATS JetStream: one connection shared by the sink (and the
// commands source).
type natsBackbone struct {
	nc   *nats.Conn
	sink *natsjs.Sink
	log  *slog.Logger
}

func openNATS(ctx context.Context, cfg *Config, log *slog.Logger) (*natsBackbone, error) {
	nc, err := natsconn.Connect(cfg.NATS, "nr-bridge "+cfg.MQTT.ClientID, log)
	if err != nil {
		return nil, err
	}
	sink, err := natsjs.New(ctx, nc, cfg.JetStream, log)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &natsBackbone{nc: nc, sink: sink, log: log}, nil
}

func (b *natsBackbone) Sink() bridge.Sink { return b.sink }

func (b *natsBackbone) Ready() error { return b.sink.Ready() }

func (b *natsBackbone) Close(ctx context.Context) error {
	err := b.sink.Close(ctx)
	// Drain flushes what is buffered (acks of the commands source) before
	// closing; Close would drop it.
	return errors.Join(err, b.nc.Drain())
}
