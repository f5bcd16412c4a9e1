package devmode

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// TestDevPubackNoSubscribers checks that the embedded broker answers a QoS 1
// publish nobody subscribed to with PUBACK 0x10, as Mosquitto does, also to
// a client with Request Problem Information 0 (the bridge's publisher); and
// 0x00 with delivery once a plain or shared subscription matches, and for a
// retained publish.
func TestDevPubackNoSubscribers(t *testing.T) {
	s := startDev(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	rpiOff := func(cc *autopaho.ClientConfig) {
		cc.SessionExpiryInterval = 60
		cc.ConnectPacketBuilder = func(p *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if p.Properties == nil {
				p.Properties = &paho.ConnectProperties{}
			}
			p.Properties.RequestProblemInfo = false
			return p, nil
		}
	}
	publishers := map[string]*autopaho.ConnectionManager{
		"default":          connect(t, s.MQTTAddr(), "pub-default", 0, nil),
		"problem-info-off": connect(t, s.MQTTAddr(), "pub-rpi-off", 0, rpiOff),
	}
	reason := func(t *testing.T, cm *autopaho.ConnectionManager, topic string, retain bool) byte {
		t.Helper()
		resp, err := cm.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: retain, Payload: []byte("x")})
		if err != nil {
			t.Fatalf("publish %s: %v", topic, err)
		}
		return resp.ReasonCode
	}
	for name, cm := range publishers {
		t.Run(name, func(t *testing.T) {
			for range 3 { // the connection stays usable after each 0x10
				if rc := reason(t, cm, "org/o1/node/n1/cmd", false); rc != 0x10 {
					t.Fatalf("no subscriber: PUBACK reason %#x, want 0x10", rc)
				}
			}
		})
	}

	got := make(chan string, 10)
	onPublish := func(cc *autopaho.ClientConfig) {
		cc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			got <- pr.Packet.Topic
			return true, nil
		}}
	}
	plain := connect(t, s.MQTTAddr(), "sub-plain", 0, onPublish)
	if _, err := plain.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "org/o1/node/n1/cmd", QoS: 1}}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	shared := connect(t, s.MQTTAddr(), "sub-shared", 0, onPublish)
	if _, err := shared.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "$share/g/org/+/node/+/events", QoS: 1}}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	for _, topic := range []string{"org/o1/node/n1/cmd", "org/o1/node/n1/events"} {
		for name, cm := range publishers {
			if rc := reason(t, cm, topic, false); rc != 0 {
				t.Fatalf("%s to %s with a subscriber: PUBACK reason %#x, want 0", name, topic, rc)
			}
			select {
			case tp := <-got:
				if tp != topic {
					t.Fatalf("delivered %s, want %s", tp, topic)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s to %s not delivered", name, topic)
			}
		}
	}
	if rc := reason(t, publishers["default"], "retained/x", true); rc != 0 {
		t.Fatalf("retained publish without subscriber: PUBACK reason %#x, want 0 (stored for later subscribers)", rc)
	}
	if len(got) != 0 {
		t.Fatalf("%d unexpected deliveries", len(got))
	}
}
