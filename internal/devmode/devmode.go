// Package devmode runs the servers `nr-bridge -dev` needs inside the bridge
// process: an MQTT v5 broker (mochi-mqtt) and either a NATS server with
// JetStream or, for BACKBONE=kafka, a Kafka-compatible broker (franz-go's
// kfake), so a newcomer can try the bridge with nothing installed but Go.
//
// Only cmd/nr-bridge's dev wiring imports this package: the normal mode never
// starts these servers. They are for trying the bridge out, not for
// production: the broker keeps sessions in memory only and binds where it is
// told, with every client allowed.
package devmode

import (
	"context"
	"errors"
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
	// NATSAddr is the NATS client listener, e.g. 127.0.0.1:4222; empty
	// when KafkaAddr is set.
	NATSAddr string
	// KafkaAddr is the Kafka listener, e.g. 127.0.0.1:9092 (BACKBONE=kafka);
	// empty for NATS. Exactly one of NATSAddr and KafkaAddr is set.
	KafkaAddr string
	// DataDir is the JetStream store directory; created when missing. The
	// Kafka broker keeps everything in memory.
	DataDir string
	// Log receives both servers' logs; nil discards them.
	Log *slog.Logger
}

// Servers are the running embedded servers. Stop shuts them down.
type Servers struct {
	mqtt  *mqttBroker
	nats  *natsServer   // nil with Kafka
	kafka *kafkaCluster // nil with NATS

	stopOnce sync.Once
	stopErr  error
}

// Start checks that every address is free (reporting all that are not in
// one error), then starts the backbone server (NATS: waits until it
// accepts connections with JetStream enabled) and the MQTT broker. A busy
// address fails with an error wrapping ErrAddrInUse that names the
// variable to change; nothing is left running on any error.
func Start(ctx context.Context, opts Options) (*Servers, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if (opts.NATSAddr == "") == (opts.KafkaAddr == "") {
		return nil, errors.New("dev mode: set exactly one of the NATS and Kafka addresses")
	}
	addrs := []Addr{{Variable: "MQTT_URL", Addr: opts.MQTTAddr}}
	if opts.KafkaAddr != "" {
		addrs = append(addrs, Addr{Variable: "KAFKA_BROKERS", Addr: opts.KafkaAddr})
	} else {
		addrs = append(addrs, Addr{Variable: "NATS_URL", Addr: opts.NATSAddr})
	}
	if err := CheckAllFree(addrs...); err != nil {
		return nil, err
	}
	s := &Servers{}
	if opts.KafkaAddr != "" {
		kc, err := startKafka(opts.KafkaAddr)
		if err != nil {
			return nil, err
		}
		s.kafka = kc
	} else {
		if err := os.MkdirAll(opts.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("DEV_DATA_DIR %s: %w", opts.DataDir, err)
		}
		ns, err := startNATS(ctx, opts.NATSAddr, opts.DataDir, opts.Log.With("component", "dev-nats"))
		if err != nil {
			return nil, err
		}
		s.nats = ns
	}
	mb, err := startMQTT(opts.MQTTAddr, opts.Log.With("component", "dev-mqtt"))
	if err != nil {
		s.stopBackbone()
		return nil, err
	}
	s.mqtt = mb
	return s, nil
}

// MQTTAddr is the address the broker listens on.
func (s *Servers) MQTTAddr() string { return s.mqtt.addr() }

// NATSAddr is the address the NATS server listens on; "" with Kafka.
func (s *Servers) NATSAddr() string {
	if s.nats == nil {
		return ""
	}
	return s.nats.addr()
}

// KafkaAddr is the address the Kafka broker listens on; "" with NATS.
func (s *Servers) KafkaAddr() string {
	if s.kafka == nil {
		return ""
	}
	return s.kafka.addr()
}

// StreamMessages returns the number of messages in each JetStream stream of
// the default account, by stream name (a stream not yet created is absent),
// or with Kafka the number of records written to each topic, by topic name.
func (s *Servers) StreamMessages(ctx context.Context) (map[string]uint64, error) {
	if s.kafka != nil {
		return s.kafka.topicRecords(ctx)
	}
	return s.nats.streamMessages()
}

// stopBackbone stops the NATS server or the Kafka broker.
func (s *Servers) stopBackbone() {
	if s.nats != nil {
		s.nats.stop()
	}
	if s.kafka != nil {
		s.kafka.stop()
	}
}

// Stop closes the MQTT broker (disconnecting its clients) and then shuts the
// NATS server or the Kafka broker down, waiting for both. It returns ctx's error if they did not
// finish in time. Stop is safe to call more than once.
func (s *Servers) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.mqtt.stop()
			s.stopBackbone()
		}()
		select {
		case <-done:
		case <-ctx.Done():
			s.stopErr = fmt.Errorf("stop dev servers: %w", ctx.Err())
		}
	})
	return s.stopErr
}
