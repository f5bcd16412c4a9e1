package sim

import (
	"context"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// TestSimReconnectsAndResubscribes restarts the broker under a running
// fleet: the connections come back (with a backoff), resubscribe, keep
// sending events and answer a command sent after the restart.
func TestSimReconnectsAndResubscribes(t *testing.T) {
	mosq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	cfg := DefaultConfig()
	cfg.URL = mosq.URL()
	cfg.Nodes, cfg.Conns, cfg.Rate = 4, 2, 20
	cfg.Progress = 0
	cfg.PublishTimeout = 2 * time.Second
	ready := make(chan struct{})
	cfg.OnReady = func() { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan Summary, 1)
	go func() {
		s, err := Run(ctx, cfg)
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		res <- s
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("fleet not ready")
	}
	mosq.Restart()

	// A client of the test's own, connected after the restart, sends a
	// command to demo/n2 until the reply comes back: commands sent before
	// the fleet has resubscribed are lost (clean sessions).
	var mu sync.Mutex
	var got *paho.Publish
	u, _ := url.Parse(mosq.URL())
	up := make(chan struct{}, 1)
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		ReconnectBackoff:              func(int) time.Duration { return 200 * time.Millisecond },
		OnConnectionUp: func(*autopaho.ConnectionManager, *paho.Connack) {
			select {
			case up <- struct{}{}:
			default:
			}
		},
		ClientConfig: paho.ClientConfig{
			ClientID: "reconnect-test-operator",
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				mu.Lock()
				defer mu.Unlock()
				if got == nil {
					got = pr.Packet
				}
				return true, nil
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		_ = cm.Disconnect(dctx)
	}()
	<-up
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if _, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "org/demo/node/n2/reply", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	last := time.Time{}
	testserver.WaitFor(t, 30*time.Second, "a reply after the broker restart", func() bool {
		mu.Lock()
		done := got != nil
		mu.Unlock()
		if done {
			return true
		}
		if time.Since(last) > 500*time.Millisecond {
			last = time.Now()
			_, _ = cm.Publish(sctx, &paho.Publish{Topic: "org/demo/node/n2/cmd", QoS: 1, Payload: []byte(`{"type":"ping"}`),
				Properties: &paho.PublishProperties{CorrelationData: []byte("after-restart"), ResponseTopic: "org/demo/node/n2/reply"}})
		}
		return false
	})
	mu.Lock()
	if string(got.Properties.CorrelationData) != "after-restart" || got.Topic != "org/demo/node/n2/reply" {
		t.Errorf("reply %s %+v", got.Topic, got.Properties)
	}
	mu.Unlock()
	cancel()
	s := <-res
	if s.CommandsReceived < 1 || s.RepliesSent != s.CommandsReceived || s.EventsAcked == 0 {
		t.Fatalf("summary %+v", s)
	}
	t.Logf("summary after a broker restart: %+v", s)
}
