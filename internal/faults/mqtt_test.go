//go:build faults

package faults

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// mqttOptions configures connectMQTT.
type mqttOptions struct {
	// Persistent keeps the session at the broker (clean start off, session
	// expiry 10 min), so a subscriber gets what was queued while it or the
	// broker was away.
	Persistent bool
	// Filters are subscribed to at QoS 1 on every connection.
	Filters []string
	// OnMessage is called for every message received; it must not block.
	OnMessage func(*paho.Publish)
}

// mqttClient is a test MQTT v5 client (agent, load generator or command
// subscriber) with autopaho reconnecting every 200 ms.
type mqttClient struct {
	cm     *autopaho.ConnectionManager
	cancel context.CancelFunc
}

// connectMQTT connects clientID and waits (10 s) for the connection and,
// with filters, the first SUBACK. A cleanup disconnects it.
func connectMQTT(t testing.TB, brokerURL, clientID string, o mqttOptions) *mqttClient {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	subscribed := make(chan error, 1)
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: !o.Persistent,
		ReconnectBackoff:              func(int) time.Duration { return 200 * time.Millisecond },
		ConnectTimeout:                5 * time.Second,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			if len(o.Filters) == 0 {
				return
			}
			go func() {
				sub := &paho.Subscribe{}
				for _, f := range o.Filters {
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
		ClientConfig: paho.ClientConfig{ClientID: clientID},
	}
	if o.Persistent {
		cfg.SessionExpiryInterval = 600
	}
	if o.OnMessage != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			o.OnMessage(pr.Packet)
			return true, nil
		}}
	}
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("connect %s: %v", clientID, err)
	}
	c := &mqttClient{cm: cm, cancel: cancel}
	t.Cleanup(c.close)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := cm.AwaitConnection(wctx); err != nil {
		t.Fatalf("%s did not connect to %s: %v", clientID, brokerURL, err)
	}
	if len(o.Filters) > 0 {
		select {
		case err := <-subscribed:
			if err != nil {
				t.Fatalf("%s: subscribe %v: %v", clientID, o.Filters, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: subscribe %v: timeout", clientID, o.Filters)
		}
	}
	return c
}

func (c *mqttClient) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.cm.Disconnect(ctx)
	c.cancel()
}

// errNoSubscribers is a PUBACK with reason code 0x10: the broker accepted
// the message but no subscription matched, so nobody will get it.
var errNoSubscribers = errors.New("PUBACK reason code 0x10 (no matching subscribers)")

// publishOnce publishes at QoS 1 and waits (at most 10 s) for the PUBACK.
// A PUBACK with reason code 0x10 returns errNoSubscribers.
func (c *mqttClient) publishOnce(topic string, payload []byte, props *paho.PublishProperties) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.cm.Publish(ctx, &paho.Publish{QoS: 1, Topic: topic, Payload: payload, Properties: props})
	switch {
	case err == nil && resp != nil && resp.ReasonCode >= 0x80:
		err = fmt.Errorf("PUBACK reason code 0x%02x", resp.ReasonCode)
	case err == nil && resp != nil && resp.ReasonCode == 0x10:
		err = errNoSubscribers
	}
	return err
}

// publish is publishOnce retried every 100 ms until it succeeds or
// deadline passes (across a broker restart); a message counts as sent only
// once a PUBACK came back. With retryNoSubscribers a PUBACK 0x10 is
// retried too, as an agent should for events (MQTT v5 tells it nobody got
// the message); without, it counts as sent. noSubs counts the 0x10s.
func (c *mqttClient) publish(topic string, payload []byte, props *paho.PublishProperties, deadline time.Time, retryNoSubscribers bool, noSubs *int) error {
	var republished int
	return c.publishCounting(topic, payload, props, deadline, retryNoSubscribers, noSubs, &republished)
}

// publishCounting is publish that also counts in republished the attempts
// made again after one that got no answer (or an error): that one may have
// reached the broker, so the event may arrive twice. An attempt after a
// 0x10 is not counted: the broker discarded that one.
func (c *mqttClient) publishCounting(topic string, payload []byte, props *paho.PublishProperties, deadline time.Time, retryNoSubscribers bool, noSubs, republished *int) error {
	for {
		err := c.publishOnce(topic, payload, props)
		if errors.Is(err, errNoSubscribers) {
			*noSubs++
			if !retryNoSubscribers {
				return nil
			}
		}
		if err == nil || time.Now().After(deadline) {
			return err
		}
		if !errors.Is(err, errNoSubscribers) {
			*republished++
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// userProps returns publish properties with the given user properties
// (name, value pairs).
func userProps(kv ...string) *paho.PublishProperties {
	p := &paho.PublishProperties{}
	for i := 0; i+1 < len(kv); i += 2 {
		p.User = append(p.User, paho.UserProperty{Key: kv[i], Value: kv[i+1]})
	}
	return p
}

// loadConfig shapes an event load.
type loadConfig struct {
	Prefix       string // msg_id prefix, unique per scenario
	Org          string // org of every node; "o1" when empty
	Conns        int    // MQTT connections
	NodesPerConn int    // nodes each connection publishes for
	Rate         int    // events per second, over all connections
	PayloadBytes int    // padding added to each payload
	// IgnoreNoSubscribers makes the agents take a PUBACK 0x10 (no
	// matching subscribers) as success instead of publishing again later.
	IgnoreNoSubscribers bool
	// NoMsgIDEvery sends every n-th event of a connection without the
	// msg_id property (0: all have one). No backbone deduplicates those,
	// so one the bridge writes twice is stored twice and counted in
	// result.Duplicates; every event carries its ID in the payload.
	NoMsgIDEvery int
}

// defaultLoad is 50 nodes over 5 connections at 250 events/s, every
// fourth event without a msg_id.
func defaultLoad(prefix string) loadConfig {
	return loadConfig{Prefix: prefix, Conns: 5, NodesPerConn: 10, Rate: 250, PayloadBytes: 200, NoMsgIDEvery: 4}
}

// eventLoad publishes events at a steady rate from many nodes, each with a
// unique ID in its payload, also sent as msg_id user property (except
// every NoMsgIDEvery-th), and records the IDs the broker acknowledged.
type eventLoad struct {
	cfg  loadConfig
	stop chan struct{}
	wg   sync.WaitGroup

	mu          sync.Mutex
	sent        map[string]struct{}
	failed      int
	errs        []error
	noSubs      int                 // PUBACKs with reason code 0x10
	republished int                 // publishes made again after one without an answer
	noSubIDs    map[string]struct{} // events taken as sent on a 0x10
}

// startLoad connects cfg.Conns clients and starts publishing.
func startLoad(t testing.TB, brokerURL string, cfg loadConfig) *eventLoad {
	t.Helper()
	if cfg.Org == "" {
		cfg.Org = "o1"
	}
	l := &eventLoad{cfg: cfg, stop: make(chan struct{}), sent: map[string]struct{}{}, noSubIDs: map[string]struct{}{}}
	pad := make([]byte, cfg.PayloadBytes)
	for i := range pad {
		pad[i] = 'x'
	}
	interval := time.Duration(float64(time.Second) * float64(cfg.Conns) / float64(cfg.Rate))
	for c := range cfg.Conns {
		cl := connectMQTT(t, brokerURL, fmt.Sprintf("load-%s-%d", cfg.Prefix, c), mqttOptions{})
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
				id := fmt.Sprintf("%s-%d-%d", cfg.Prefix, c, i)
				topic := fmt.Sprintf("org/%s/node/n%03d/events", cfg.Org, c*cfg.NodesPerConn+i%cfg.NodesPerConn)
				payload := fmt.Appendf(nil, `{"id":%q,"i":%d,"pad":%q}`, id, i, pad)
				props := userProps("msg_id", id)
				if cfg.NoMsgIDEvery > 0 && i%cfg.NoMsgIDEvery == 0 {
					props = nil
				}
				noSubs, republished := 0, 0
				err := cl.publishCounting(topic, payload, props, time.Now().Add(60*time.Second), !cfg.IgnoreNoSubscribers, &noSubs, &republished)
				l.mu.Lock()
				l.noSubs += noSubs
				l.republished += republished
				if noSubs > 0 && cfg.IgnoreNoSubscribers && err == nil {
					l.noSubIDs[id] = struct{}{}
				}
				if err != nil {
					l.failed++
					if len(l.errs) < 5 {
						l.errs = append(l.errs, fmt.Errorf("%s: %w", id, err))
					}
				} else {
					l.sent[id] = struct{}{}
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// Stop stops publishing and waits for the publishes in progress.
func (l *eventLoad) Stop() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// Sent is how many events the broker acknowledged so far.
func (l *eventLoad) Sent() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sent)
}

// IDs returns the acknowledged IDs; call it after Stop.
func (l *eventLoad) IDs() map[string]struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]struct{}, len(l.sent))
	for id := range l.sent {
		out[id] = struct{}{}
	}
	return out
}

// Failed is the number of events whose publish never got a PUBACK (not
// counted as sent), with the first errors.
func (l *eventLoad) Failed() (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed, errors.Join(l.errs...)
}

// NoSubscribers is the number of PUBACKs with reason code 0x10 (no
// matching subscribers) the agents got.
func (l *eventLoad) NoSubscribers() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.noSubs
}

// NoSubscriberIDs are the events the agents took as sent on a PUBACK 0x10
// (with IgnoreNoSubscribers): the broker discarded them.
func (l *eventLoad) NoSubscriberIDs() map[string]struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]struct{}, len(l.noSubIDs))
	for id := range l.noSubIDs {
		out[id] = struct{}{}
	}
	return out
}

// Republished is how many publishes the agents made again after one that
// got no answer: each may have reached the broker, so its event may be
// written twice without any fault of the bridge.
func (l *eventLoad) Republished() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.republished
}

// waitSent blocks until the load has n events acknowledged.
func waitSent(t testing.TB, l *eventLoad, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for l.Sent() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d events sent after 60 s", l.Sent(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
