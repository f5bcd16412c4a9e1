// Package devmode runs the servers `nr-bridge -dev` needs inside the bridge
// process: an MQTT v5 broker (mochi-mqtt) and a NATS server with JetStream,
// so a newcomer can try the bridge with nothing installed but Go.
//
// Only cmd/nr-bridge's dev wiring imports this package: the normal mode never
// starts these servers. They are for trying the bridge out, not for
// production: the broker keeps sessions in memory only and binds where it is
// told, with every client allowed.
package devmode

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// DefaultDataDir is where the embedded NATS server keeps its JetStream
// store when neither DEV_DATA_DIR nor -dev-data is set.
const DefaultDataDir = "./nr-dev-data"

// Config is the dev mode's own configuration, read from the environment
// only when -dev is given.
type Config struct {
	DataDir string `env:"DEV_DATA_DIR" envDefault:"./nr-dev-data" desc:"directory of the embedded NATS server's JetStream store in -dev mode"`
}

// Options says where the embedded servers listen and store. Addresses are
// host:port; the caller takes them from MQTT_URL and NATS_URL, so errors
// name those variables.
type Options struct {
	// MQTTAddr is the MQTT listener, e.g. 127.0.0.1:1883.
	MQTTAddr string
	// NATSAddr is the NATS client listener, e.g. 127.0.0.1:4222.
	NATSAddr string
	// DataDir is the JetStream store directory; created when missing.
	DataDir string
	// Log receives both servers' logs; nil discards them.
	Log *slog.Logger
}

// Servers are the running embedded servers. Stop shuts them down.
type Servers struct {
	mqtt *mqttBroker
	nats *natsServer

	stopOnce sync.Once
	stopErr  error
}

// Start checks that both addresses are free, then starts the NATS server
// (and waits until it accepts connections with JetStream enabled) and the
// MQTT broker. An address already in use fails with an error wrapping
// ErrAddrInUse that names the variable to change; nothing is left running
// on any error.
func Start(ctx context.Context, opts Options) (*Servers, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if err := CheckFree(opts.MQTTAddr, "MQTT_URL"); err != nil {
		return nil, err
	}
	if err := CheckFree(opts.NATSAddr, "NATS_URL"); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("DEV_DATA_DIR %s: %w", opts.DataDir, err)
	}
	ns, err := startNATS(ctx, opts.NATSAddr, opts.DataDir, opts.Log.With("component", "dev-nats"))
	if err != nil {
		return nil, err
	}
	mb, err := startMQTT(opts.MQTTAddr, opts.Log.With("component", "dev-mqtt"))
	if err != nil {
		ns.stop()
		return nil, err
	}
	return &Servers{mqtt: mb, nats: ns}, nil
}

// MQTTAddr is the address the broker listens on.
func (s *Servers) MQTTAddr() string { return s.mqtt.addr() }

// NATSAddr is the address the NATS server listens on.
func (s *Servers) NATSAddr() string { return s.nats.addr() }

// StreamMessages returns the number of messages in each JetStream stream of
// the default account, by stream name; a stream not yet created is absent.
func (s *Servers) StreamMessages() (map[string]uint64, error) {
	return s.nats.streamMessages()
}

// Stop closes the MQTT broker (disconnecting its clients) and then shuts the
// NATS server down, waiting for both. It returns ctx's error if they did not
// finish in time. Stop is safe to call more than once.
func (s *Servers) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.mqtt.stop()
			s.nats.stop()
		}()
		select {
		case <-done:
		case <-ctx.Done():
			s.stopErr = fmt.Errorf("stop dev servers: %w", ctx.Err())
		}
	})
	return s.stopErr
}
