package devmode

import (
	"fmt"
	"log/slog"
	"math"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// mqttBroker is the embedded mochi-mqtt broker.
type mqttBroker struct {
	srv      *mqtt.Server
	listener *listeners.TCP
	once     sync.Once
}

// brokerCapabilities are mochi's defaults with the per-client limits raised
// to the MQTT maximum, so that a load test (nr-sim) is not throttled or
// dropped by the broker long before the bridge is the bottleneck:
//
//   - ReceiveMaximum (QoS 1 publishes a client may have un-acknowledged
//     towards the broker): 1024 -> 65535.
//   - MaximumInflight (QoS 1 messages the broker stores per client before it
//     drops further ones with "client store quota reached"): 8192 -> 65535.
//   - MaximumClientWritesPending (the outbound queue per client; when it is
//     full mochi drops the message for that client): 8192 -> 65535. With the
//     send quota off (noSendQuota) this queue is what absorbs a burst while
//     the bridge catches up. mochi allocates it for every client: 512 KiB
//     each.
func brokerCapabilities() *mqtt.Capabilities {
	c := mqtt.NewDefaultServerCapabilities()
	c.ReceiveMaximum = math.MaxUint16
	c.MaximumInflight = math.MaxUint16
	c.MaximumClientWritesPending = math.MaxUint16
	return c
}

// startMQTT binds addr and starts serving. mochi denies every client unless
// an auth hook allows it, so allowAll is added: dev mode has no users. The
// other hooks make mochi behave like Mosquitto where the bridge would notice
// (quota.go, userprops.go, nosubscribers.go).
func startMQTT(addr string, log *slog.Logger) (*mqttBroker, error) {
	srv := mqtt.New(&mqtt.Options{
		Capabilities: brokerCapabilities(),
		Logger:       slog.New(brokerLogHandler{log.Handler()}),
	})
	if err := srv.AddHook(new(allowAll), nil); err != nil {
		return nil, fmt.Errorf("mqtt broker: allow hook: %w", err)
	}
	if err := srv.AddHook(&noSendQuota{log: log}, nil); err != nil {
		return nil, fmt.Errorf("mqtt broker: send quota hook: %w", err)
	}
	if err := srv.AddHook(new(keepPublishUserProperties), nil); err != nil {
		return nil, fmt.Errorf("mqtt broker: user properties hook: %w", err)
	}
	if err := srv.AddHook(&pubackNoSubscribers{srv: srv}, nil); err != nil {
		return nil, fmt.Errorf("mqtt broker: no-subscribers hook: %w", err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "dev-tcp", Address: addr})
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("MQTT_URL: listen on %s: %w", addr, err)
	}
	// Serve starts the listener goroutines and returns.
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return nil, fmt.Errorf("mqtt broker: serve: %w", err)
	}
	return &mqttBroker{srv: srv, listener: tcp}, nil
}

func (b *mqttBroker) addr() string { return b.listener.Address() }

// stop disconnects every client and closes the listener; it waits for the
// client goroutines. Safe to call more than once (mochi's Close is not).
func (b *mqttBroker) stop() {
	b.once.Do(func() { _ = b.srv.Close() })
}
