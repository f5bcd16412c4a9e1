package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// backbone is one streaming backbone as run uses it: the sink the workers
// write to, and its readiness. Each backbone's wiring lives in its own file
// (backbone_nats.go, ...).
type backbone interface {
	Sink() bridge.Sink
	// Ready returns nil while the backbone connection is up.
	Ready() error
	// StatusStore is where command statuses are shared with the other
	// replicas (NR_COMMAND_STATUS, nr.command-status); Close closes it.
	StatusStore() bridge.StatusStore
	// StartCommands starts the commands source, which submits every
	// command of the backbone's commands stream (NR_COMMANDS, nr.commands)
	// to in, the bridge's one command intake. instanceID is stable per
	// replica and unique across replicas (the publisher's MQTT client ID);
	// Kafka makes it the group instance ID (static membership). It blocks
	// until the source is set up or ctx ends.
	StartCommands(ctx context.Context, in *bridge.Intake, instanceID string) error
	// StopCommands stops the commands source: no new commands, the ones in
	// progress published and acked (or handed back when ctx ends). It is a
	// no-op when the source was not started.
	StopCommands(ctx context.Context) error
	// Close flushes the sink (after the workers stopped) and closes the
	// connection.
	Close(ctx context.Context) error
}

// openBackbone connects the configured backbone. It blocks until the
// backbone is reachable and set up, or ctx ends. While it waits, progress
// (when set) answers why it is not open yet, for /readyz: the backbone's
// (redacted) address and its last connection error.
func openBackbone(ctx context.Context, cfg *Config, log *slog.Logger, m bridge.Metrics, progress *atomic.Pointer[func() error]) (backbone, error) {
	switch cfg.Backbone {
	case "nats":
		return openNATS(ctx, cfg, log, m, progress)
	case "kafka":
		return openKafka(ctx, cfg, log)
	default:
		return nil, fmt.Errorf("BACKBONE %q: not supported", cfg.Backbone)
	}
}
