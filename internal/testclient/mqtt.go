// Package testclient has the clients tests use to drive the bridge from the
// outside: an MQTT v5 publisher/subscriber on a real broker and a JetStream
// reader.
package testclient

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// MQTT is a test MQTT v5 client with a clean session.
type MQTT struct {
	t  testing.TB
	cm *autopaho.ConnectionManager

	mu       sync.Mutex
	received []*paho.Publish
}

// ConnectMQTT connects clientID to brokerURL and waits for the connection
// (10 s). If filters are given it subscribes to them at QoS 1 and records
// every message it receives (see Received).
func ConnectMQTT(t testing.TB, brokerURL, clientID string, filters ...string) *MQTT {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatalf("testclient: %v", err)
	}
	c := &MQTT{t: t}
	ctx, cancel := context.WithCancel(context.Background())
	subscribed := make(chan error, 1)
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		ReconnectBackoff:              func(int) time.Duration { return 200 * time.Millisecond },
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			if len(filters) == 0 {
				return
			}
			go func() {
				sub := &paho.Subscribe{}
				for _, f := range filters {
					sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
				}
				sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
				defer scancel()
				_, err := cm.Subscribe(sctx, sub)
				select {
				case subscribed <- err:
				default:
				}
			}()
		},
		ClientConfig: paho.ClientConfig{
			ClientID: clientID,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				c.mu.Lock()
				c.received = append(c.received, pr.Packet)
				c.mu.Unlock()
				return true, nil
			}},
		},
	}
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("testclient: connect %s: %v", brokerURL, err)
	}
	c.cm = cm
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		_ = cm.Disconnect(dctx)
		cancel()
	})
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := cm.AwaitConnection(wctx); err != nil {
		t.Fatalf("testclient: %s did not connect to %s: %v", clientID, brokerURL, err)
	}
	if len(filters) > 0 {
		select {
		case err := <-subscribed:
			if err != nil {
				t.Fatalf("testclient: subscribe %v: %v", filters, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("testclient: subscribe %v: timeout", filters)
		}
	}
	return c
}

// Publish publishes at QoS 1 and waits for the PUBACK, retrying while the
// connection is down (up to 30 s), so tests can publish across a broker
// restart.
func (c *MQTT) Publish(topic string, payload []byte, props *paho.PublishProperties) {
	c.t.Helper()
	if err := c.TryPublish(topic, payload, props); err != nil {
		c.t.Fatalf("testclient: publish %s: %v", topic, err)
	}
}

// TryPublish is Publish returning the error instead of failing the test.
func (c *MQTT) TryPublish(topic string, payload []byte, props *paho.PublishProperties) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.cm.Publish(ctx, &paho.Publish{QoS: 1, Topic: topic, Payload: payload, Properties: props})
		cancel()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Received returns a copy of the messages received so far.
func (c *MQTT) Received() []*paho.Publish {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*paho.Publish(nil), c.received...)
}

// Props returns publish properties with the given user properties (name,
// value pairs).
func Props(kv ...string) *paho.PublishProperties {
	p := &paho.PublishProperties{}
	for i := 0; i+1 < len(kv); i += 2 {
		p.User = append(p.User, paho.UserProperty{Key: kv[i], Value: kv[i+1]})
	}
	return p
}

// MsgID returns a msg_id user property set.
func MsgID(format string, a ...any) *paho.PublishProperties {
	return Props("msg_id", fmt.Sprintf(format, a...))
}
