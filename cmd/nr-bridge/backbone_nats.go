package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/internal/natsstatus"
	"github.com/nr-bridge/nr-bridge/internal/redact"
	"github.com/nr-bridge/nr-bridge/sinks/natsjs"
	cmdnatsjs "github.com/nr-bridge/nr-bridge/sources/natsjs"
)

// natsBackbone is NATS JetStream: one connection shared by the sink, the
// commands source and the status bucket, each with what it needs from
// natsconn.
type natsBackbone struct {
	nc       *nats.Conn
	js       jetstream.JetStream // the commands source's and the status bucket's
	sink     *natsjs.Sink
	commands *cmdnatsjs.Source // nil until StartCommands
	status   *natsstatus.Store
	cfg      *Config
	log      *slog.Logger
}

func openNATS(ctx context.Context, cfg *Config, log *slog.Logger, m bridge.Metrics, progress *atomic.Pointer[func() error]) (*natsBackbone, error) {
	var lastFail atomic.Pointer[error]
	nc, err := natsconn.ConnectWatched(cfg.NATS, "nr-bridge "+cfg.MQTT.ClientID, log, func(err error) { lastFail.Store(&err) })
	if err != nil {
		return nil, err
	}
	if progress != nil {
		url := redact.URLs(cfg.NATS.URL)
		why := func() error {
			if p := lastFail.Load(); p != nil && !nc.IsConnected() {
				return fmt.Errorf("connecting to NATS %s: %w", url, *p)
			}
			if nc.IsConnected() {
				return fmt.Errorf("connected to NATS %s, setting up JetStream streams", url)
			}
			return fmt.Errorf("connecting to NATS %s", url)
		}
		progress.Store(&why)
	}
	sink, err := natsjs.New(nc, cfg.JetStream, log, m)
	if err == nil {
		err = sink.Start(ctx)
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	js, err := natsconn.JetStream(nc)
	if err != nil {
		_ = sink.Close(ctx)
		nc.Close()
		return nil, err
	}
	status, err := natsstatus.New(ctx, js, cfg.NATSStatus, natsstatus.Options{
		Manage:   cfg.JetStream.ManageStreams,
		Replicas: cfg.JetStream.Replicas,
		TTL:      cfg.Tracking.Retention(cfg.CommandLimits.MaxTTL),
	}, log)
	if err != nil {
		_ = sink.Close(ctx)
		nc.Close()
		return nil, err
	}
	return &natsBackbone{nc: nc, js: js, sink: sink, status: status, cfg: cfg, log: log}, nil
}

// StatusStore is the NR_COMMAND_STATUS key-value bucket, on the shared
// connection.
func (b *natsBackbone) StatusStore() bridge.StatusStore { return b.status }

func (b *natsBackbone) Sink() bridge.Sink { return b.sink }

func (b *natsBackbone) Ready() error { return b.sink.Ready() }

// StartCommands consumes NR_COMMANDS on the shared connection.
func (b *natsBackbone) StartCommands(ctx context.Context, in *bridge.Intake, _ string) error {
	src := cmdnatsjs.New(b.js, b.cfg.NATSCommands, b.cfg.JetStream.Streams, in, b.log)
	if err := src.Start(ctx); err != nil {
		return err
	}
	b.commands = src
	return nil
}

func (b *natsBackbone) StopCommands(ctx context.Context) error {
	if b.commands == nil {
		return nil
	}
	return b.commands.Close(ctx)
}

func (b *natsBackbone) Close(ctx context.Context) error {
	err := b.sink.Close(ctx)
	// Drain flushes what is buffered (acks of the commands source) before
	// closing; Close would drop it.
	return errors.Join(err, b.nc.Drain())
}
