package devmode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}

// startDev starts the dev servers on free ports; a cleanup stops them.
func startDev(t *testing.T) *Servers {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{
		MQTTAddr: "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t)),
		NATSAddr: "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t)),
		DataDir:  t.TempDir(),
		Log:      testLogger(t),
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return s
}

// connect opens an autopaho connection; receiveMax 0 leaves paho's default.
// A cleanup disconnects it.
func connect(t *testing.T, addr, clientID string, receiveMax uint16, cfg func(*autopaho.ClientConfig)) *autopaho.ConnectionManager {
	t.Helper()
	u, _ := url.Parse("tcp://" + addr)
	up := make(chan struct{}, 1)
	cc := autopaho.ClientConfig{
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
		ClientConfig: paho.ClientConfig{ClientID: clientID},
	}
	if receiveMax > 0 {
		cc.ConnectPacketBuilder = func(p *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if p.Properties == nil {
				p.Properties = &paho.ConnectProperties{}
			}
			p.Properties.ReceiveMaximum = &receiveMax
			return p, nil
		}
	}
	if cfg != nil {
		cfg(&cc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cm, err := autopaho.NewConnection(ctx, cc)
	if err != nil {
		cancel()
		t.Fatalf("connect %s: %v", clientID, err)
	}
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		_ = cm.Disconnect(dctx)
		cancel()
		<-cm.Done()
	})
	select {
	case <-up:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not connected to %s", clientID, addr)
	}
	return cm
}

// TestDevServersPubSubAndJetStream checks both servers: an MQTT v5 message
// with properties goes through a shared subscription, and JetStream stores
// in the data dir.
func TestDevServersPubSubAndJetStream(t *testing.T) {
	s := startDev(t)

	got := make(chan *paho.Publish, 1)
	sub := connect(t, s.MQTTAddr(), "sub", 0, func(cc *autopaho.ClientConfig) {
		cc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			got <- pr.Packet
			return true, nil
		}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "$share/g/org/+/node/+/events", QoS: 1}}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	pub := connect(t, s.MQTTAddr(), "pub", 0, nil)
	if _, err := pub.Publish(ctx, &paho.Publish{
		Topic: "org/o1/node/n1/events", QoS: 1, Payload: []byte(`{"a":1}`),
		Properties: &paho.PublishProperties{
			ContentType:     "application/json",
			CorrelationData: []byte("c-1"),
			User:            paho.UserProperties{{Key: "msg_id", Value: "m-1"}},
		},
	}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	select {
	case p := <-got:
		if p.Topic != "org/o1/node/n1/events" || string(p.Payload) != `{"a":1}` || p.Properties.ContentType != "application/json" ||
			string(p.Properties.CorrelationData) != "c-1" || p.Properties.User.Get("msg_id") != "m-1" {
			t.Fatalf("got %s %q %+v", p.Topic, p.Payload, p.Properties)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("message not delivered through the shared subscription")
	}

	nc, err := nats.Connect("nats://" + s.NATSAddr())
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, fmt.Sprintf("t.%d", i), []byte("x")); err != nil {
			t.Fatalf("js publish: %v", err)
		}
	}
	counts, err := s.StreamMessages(ctx)
	if err != nil || counts["T"] != 3 {
		t.Fatalf("StreamMessages = %v, %v; want T=3", counts, err)
	}
}

// burst publishes publishers x perPublisher QoS 1 messages concurrently to a
// shared subscription of subscribers clients that connect with receiveMax
// and acknowledge in batches, later than receipt, like the bridge's workers
// waiting for their backbone writes. It fails unless every message arrives
// exactly once.
func burst(t *testing.T, s *Servers, publishers, perPublisher, subscribers int, receiveMax uint16) {
	t.Helper()
	total := publishers * perPublisher
	var mu sync.Mutex
	seen := make(map[string]int, total)
	var pending []paho.PublishReceived
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range subscribers {
		sub := connect(t, s.MQTTAddr(), fmt.Sprintf("slow-sub-%d", i), receiveMax, func(cc *autopaho.ClientConfig) {
			cc.EnableManualAcknowledgment = true
			cc.SendAcksInterval = 10 * time.Millisecond
			cc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				mu.Lock()
				defer mu.Unlock()
				seen[string(pr.Packet.Payload)]++
				pending = append(pending, pr)
				return true, nil
			}}
		})
		if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "$share/g/burst/+", QoS: 1}}}); err != nil {
			t.Fatalf("subscribe: %v", err)
		}
	}
	stop := make(chan struct{})
	ackerDone := make(chan struct{})
	go func() {
		defer close(ackerDone)
		tick := time.NewTicker(15 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			mu.Lock()
			batch := pending
			pending = nil
			mu.Unlock()
			for _, pr := range batch {
				_ = pr.Client.Ack(pr.Packet)
			}
		}
	}()
	defer func() { close(stop); <-ackerDone }()

	var wg sync.WaitGroup
	errs := make(chan error, total)
	for p := range publishers {
		pub := connect(t, s.MQTTAddr(), fmt.Sprintf("burst-pub-%d", p), 0, nil)
		// 16 publishes in flight per publisher.
		for w := range 16 {
			wg.Go(func() {
				for i := w; i < perPublisher; i += 16 {
					payload := fmt.Sprintf("%d-%d", p, i)
					if _, err := pub.Publish(ctx, &paho.Publish{Topic: "burst/" + strconv.Itoa(i%7), QoS: 1, Payload: []byte(payload)}); err != nil {
						errs <- fmt.Errorf("publish %s: %w", payload, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	testserver.WaitFor(t, 30*time.Second, fmt.Sprintf("%d distinct messages at the subscribers", total), func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == total
	})
	mu.Lock()
	defer mu.Unlock()
	for k, n := range seen {
		if n != 1 {
			t.Errorf("message %s delivered %d times, want 1", k, n)
		}
	}
}

// TestDevQuotaStallFixed reproduces mochi's send-quota stall (quota.go,
// mochi v2.7.9): a subscriber with a small Receive Maximum that acknowledges in
// batches and a burst many times larger. With mochi's send quota on,
// delivery stops after 2 x ReceiveMaximum messages.
func TestDevQuotaStallFixed(t *testing.T) {
	burst(t, startDev(t), 1, 500, 1, 5)
}

// TestDevNoDeadlockUnderConcurrentLoad reproduces mochi's NextImmediate
// deadlock: concurrent publishers while subscribers with the bridge's
// default Receive Maximum acknowledge. With mochi's send quota on, a
// publisher's and a subscriber's goroutines block each other for good within
// a few runs.
func TestDevNoDeadlockUnderConcurrentLoad(t *testing.T) {
	burst(t, startDev(t), 8, 2500, 2, 1000)
}

func TestDevPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free := "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t))

	tests := []struct {
		name       string
		mqtt, nats string
		wantVar    string
	}{
		{name: "mqtt", mqtt: busy.Addr().String(), nats: free, wantVar: "MQTT_URL"},
		{name: "nats", mqtt: free, nats: busy.Addr().String(), wantVar: "NATS_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Start(context.Background(), Options{MQTTAddr: tt.mqtt, NATSAddr: tt.nats, DataDir: t.TempDir()})
			if err == nil {
				_ = s.Stop(context.Background())
				t.Fatal("Start succeeded on a busy port")
			}
			if !errors.Is(err, ErrAddrInUse) {
				t.Fatalf("err = %v, want ErrAddrInUse", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tt.wantVar+": ") || !strings.Contains(msg, busy.Addr().String()) {
				t.Fatalf("err = %q, want it to start with %s and name %s", msg, tt.wantVar, busy.Addr())
			}
			// Nothing was started: the free address is still free.
			if err := CheckFree(free, "X"); err != nil {
				t.Fatalf("free address taken after a failed Start: %v", err)
			}
		})
	}
}

// TestDevStopReleasesPorts checks that both addresses can be bound again
// after Stop, and that a second Stop is harmless.
func TestDevStopReleasesPorts(t *testing.T) {
	s, err := Start(context.Background(), Options{
		MQTTAddr: "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t)),
		NATSAddr: "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t)),
		DataDir:  t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	mq, na := s.MQTTAddr(), s.NATSAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	for _, a := range []string{mq, na} {
		if err := CheckFree(a, "X"); err != nil {
			t.Errorf("after Stop: %v", err)
		}
	}
}

// TestDevUserPropertiesWithProblemInfoOff: a subscriber that connected with
// Request Problem Information = 0 (what autopaho sends for any client with a
// session expiry, the bridge's workers included) still gets the user
// properties of every PUBLISH (keepPublishUserProperties).
func TestDevUserPropertiesWithProblemInfoOff(t *testing.T) {
	s := startDev(t)
	got := make(chan *paho.Publish, 10)
	sub := connect(t, s.MQTTAddr(), "rpi-off", 0, func(cc *autopaho.ClientConfig) {
		cc.SessionExpiryInterval = 60
		cc.ConnectPacketBuilder = func(p *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if p.Properties == nil {
				p.Properties = &paho.ConnectProperties{}
			}
			p.Properties.RequestProblemInfo = false
			return p, nil
		}
		cc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			got <- pr.Packet
			return true, nil
		}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "$share/g/props/+", QoS: 1}}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	pub := connect(t, s.MQTTAddr(), "props-pub", 0, nil)
	const n = 5
	for i := range n {
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "props/x", QoS: 1, Payload: []byte("p"), Properties: &paho.PublishProperties{
			CorrelationData: []byte("c"),
			User:            paho.UserProperties{{Key: "msg_id", Value: strconv.Itoa(i)}, {Key: "site", Value: "lab"}},
		}}); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	for i := range n {
		select {
		case p := <-got:
			if p.Properties == nil || p.Properties.User.Get("msg_id") != strconv.Itoa(i) || p.Properties.User.Get("site") != "lab" ||
				string(p.Properties.CorrelationData) != "c" {
				t.Fatalf("message %d: properties %+v, want msg_id %d, site lab, correlation data c", i, p.Properties, i)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d not delivered", i)
		}
	}
}

func TestDevBrokerLogNoEmptyMessage(t *testing.T) {
	var buf strings.Builder
	log := slog.New(brokerLogHandler{slog.NewTextHandler(&buf, nil)}).With("listener", "dev-tcp")
	log.Warn("", "error", "read tcp: use of closed network connection")
	log.Info("attached listener")
	out := buf.String()
	if !strings.Contains(out, `msg="MQTT client connection ended with an error" listener=dev-tcp error="read tcp: use of closed network connection"`) ||
		!strings.Contains(out, "msg=\"attached listener\" listener=dev-tcp") {
		t.Fatalf("log output:\n%s", out)
	}
}

// TestCheckAllFreeReportsEveryClash checks that CheckAllFree names every
// busy address with its variable in one error, and nothing else.
func TestCheckAllFreeReportsEveryClash(t *testing.T) {
	a, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	free := "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t))

	if err := CheckAllFree(Addr{"MQTT_URL", free}); err != nil {
		t.Fatalf("free address: %v", err)
	}
	err = CheckAllFree(Addr{"MQTT_URL", a.Addr().String()}, Addr{"NATS_URL", free}, Addr{"HTTP_ADDR", b.Addr().String()})
	var pe PortErrors
	if !errors.As(err, &pe) || len(pe) != 2 || !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("err = %v, want PortErrors with 2 errors wrapping ErrAddrInUse", err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "2 addresses cannot be used: MQTT_URL: "+a.Addr().String()+": address already in use") ||
		!strings.Contains(msg, "; HTTP_ADDR: "+b.Addr().String()+": address already in use") || strings.Contains(msg, "NATS_URL") ||
		strings.Contains(msg, "\n") {
		t.Fatalf("err = %q", msg)
	}
}
