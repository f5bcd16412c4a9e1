package testserver_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// TestMain checks that the helpers, and the clients the tests use, leave no
// goroutine behind once every cleanup ran.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMosquittoRestartKeepsPortAndPersistence(t *testing.T) {
	t.Parallel()
	m := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	if !strings.HasPrefix(m.URL(), "tcp://127.0.0.1:") || m.Port() == 0 {
		t.Fatalf("URL() = %q, Port() = %d", m.URL(), m.Port())
	}
	if m.TLSURL() != "" {
		t.Errorf("TLSURL() = %q without TLS, want empty", m.TLSURL())
	}

	c, connack := mqttConnect(t, m.Addr(), "writer", nil)
	// The generated config sets max_inflight_messages, which Mosquitto
	// advertises as Receive Maximum.
	if connack.Properties == nil || connack.Properties.ReceiveMaximum == nil ||
		*connack.Properties.ReceiveMaximum != testserver.DefaultMosquittoMaxInflight {
		t.Errorf("CONNACK Receive Maximum = %+v, want %d", connack.Properties, testserver.DefaultMosquittoMaxInflight)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Publish(ctx, &paho.Publish{Topic: "tst/retained", QoS: 1, Retain: true, Payload: []byte("kept")}); err != nil {
		t.Fatalf("publish retained: %v", err)
	}
	_ = c.Disconnect(&paho.Disconnect{})

	url, addr := m.URL(), m.Addr()
	m.Stop()
	m.Stop() // idempotent
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatalf("dial %s succeeded after Stop", addr)
	}

	m.Restart()
	if m.URL() != url {
		t.Fatalf("URL after Restart = %q, want %q", m.URL(), url)
	}
	got := make(chan string, 1)
	c2, _ := mqttConnect(t, m.Addr(), "reader", func(p *paho.Publish) {
		select {
		case got <- string(p.Payload):
		default:
		}
	})
	if _, err := c2.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "tst/#", QoS: 1}}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	select {
	case p := <-got:
		if p != "kept" {
			t.Fatalf("retained payload after restart = %q, want %q", p, "kept")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("retained message not delivered after Stop/Restart with persistence")
	}
	_ = c2.Disconnect(&paho.Disconnect{})

	m.Kill()
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatalf("dial %s succeeded after Kill", addr)
	}
	m.Restart()
	if m.URL() != url {
		t.Fatalf("URL after Kill+Restart = %q, want %q", m.URL(), url)
	}
	c3, _ := mqttConnect(t, m.Addr(), "again", nil)
	_ = c3.Disconnect(&paho.Disconnect{})
}

func TestMosquittoTLSRequireCertificate(t *testing.T) {
	t.Parallel()
	ca := testserver.NewCA(t)
	m := testserver.StartMosquitto(t, testserver.MosquittoOptions{TLS: ca.ServerTLS(t, true)})
	u, err := url.Parse(m.TLSURL())
	if err != nil || u.Scheme != "ssl" || u.Hostname() != "localhost" || u.Port() == "" {
		t.Fatalf("TLSURL() = %q (%v), want ssl://localhost:port", m.TLSURL(), err)
	}
	if u.Port() == fmt.Sprint(m.Port()) {
		t.Fatalf("TLS listener shares the plain port %d", m.Port())
	}
	certFile, keyFile := ca.Issue(t, "bridge-0", nil, nil, true)

	t.Run("with client cert", func(t *testing.T) {
		conn, err := tls.Dial("tcp", u.Host, ca.ClientTLSConfig(t, certFile, keyFile))
		if err != nil {
			t.Fatalf("tls.Dial with client certificate: %v", err)
		}
		defer conn.Close()
		if err := rawMQTTConnect(conn, "tls-ok"); err != nil {
			t.Fatalf("MQTT CONNECT over TLS with client certificate: %v", err)
		}
	})
	t.Run("without client cert", func(t *testing.T) {
		conn, err := tls.Dial("tcp", u.Host, ca.ClientTLSConfig(t, "", ""))
		if err != nil {
			return // handshake refused: what we want
		}
		defer conn.Close()
		// With TLS 1.3 the client finishes its handshake before the
		// server checks the certificate; the rejection comes on read.
		if err := rawMQTTConnect(conn, "tls-nocert"); err == nil {
			t.Fatal("MQTT CONNECT without client certificate succeeded; require_certificate not enforced")
		}
	})
	t.Run("plain listener still open", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", m.Addr(), time.Second)
		if err != nil {
			t.Fatalf("dial plain listener: %v", err)
		}
		defer conn.Close()
		if err := rawMQTTConnect(conn, "plain"); err != nil {
			t.Fatalf("MQTT CONNECT on plain listener: %v", err)
		}
	})
}

func TestNATSRestartKeepsJetStreamData(t *testing.T) {
	t.Parallel()
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	port := ns.Port()
	if port <= 0 || port == 4222 || ns.URL() != fmt.Sprintf("nats://127.0.0.1:%d", port) {
		t.Fatalf("Port() = %d, URL() = %q", port, ns.URL())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	nc := natsConnect(t, ns.URL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"ev.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if _, err := js.Publish(ctx, "ev.o1.n1", []byte("persisted")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	nc.Close()

	ns.Restart()
	if ns.Port() != port {
		t.Fatalf("port after Restart = %d, want %d", ns.Port(), port)
	}
	nc2 := natsConnect(t, ns.URL())
	js2, err := jetstream.New(nc2)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js2.Stream(ctx, "EVENTS")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	msg, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatalf("get message 1 after restart: %v", err)
	}
	if string(msg.Data) != "persisted" || msg.Subject != "ev.o1.n1" {
		t.Fatalf("message after restart = %s %q", msg.Subject, msg.Data)
	}
	nc2.Close()

	ns.Shutdown()
	ns.Shutdown() // idempotent
	if ns.Server() != nil {
		t.Error("Server() not nil after Shutdown")
	}
	if nc3, err := nats.Connect(ns.URL(), nats.Timeout(time.Second)); err == nil {
		nc3.Close()
		t.Fatal("connect succeeded after Shutdown")
	}
}

func TestNATSTLSAndUsers(t *testing.T) {
	t.Parallel()
	ca := testserver.NewCA(t)
	ns := testserver.StartNATS(t, testserver.NATSOptions{
		TLS:   ca.ServerTLS(t, true),
		Users: map[string]string{"bridge": "s3cret"},
	})
	if !strings.HasPrefix(ns.URL(), "tls://127.0.0.1:") {
		t.Fatalf("URL() = %q, want tls://127.0.0.1:port", ns.URL())
	}
	certFile, keyFile := ca.Issue(t, "bridge", nil, nil, true)
	withCert := ca.ClientTLSConfig(t, certFile, keyFile)

	nc, err := nats.Connect(ns.URL(), nats.Secure(withCert), nats.UserInfo("bridge", "s3cret"), nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatalf("connect with client cert and password: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	nc.Close()

	for _, tc := range []struct {
		name string
		tls  *tls.Config
		pass string
	}{
		{name: "wrong password", tls: withCert, pass: "nope"},
		{name: "no client cert", tls: ca.ClientTLSConfig(t, "", ""), pass: "s3cret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := nats.Connect(ns.URL(), nats.Secure(tc.tls), nats.UserInfo("bridge", tc.pass), nats.Timeout(2*time.Second))
			if err == nil {
				nc.Close()
				t.Fatal("connect succeeded, want an error")
			}
		})
	}
}

func TestNATSProcessPauseResumeRestart(t *testing.T) {
	t.Parallel()
	np := testserver.StartNATSProcess(t, testserver.NATSOptions{})
	port := np.Port()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	nc := natsConnect(t, np.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if _, err := nc.Subscribe("svc.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Request("svc.echo", []byte("before"), 2*time.Second); err != nil {
		t.Fatalf("request before pause: %v", err)
	}

	np.Pause()
	if _, err := nc.Request("svc.echo", []byte("paused"), 300*time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("request while paused: err = %v, want %v", err, nats.ErrTimeout)
	}
	np.Resume()
	if msg, err := nc.Request("svc.echo", []byte("after"), 2*time.Second); err != nil || string(msg.Data) != "after" {
		t.Fatalf("request after resume: %v %v", msg, err)
	}

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "CMDS", Subjects: []string{"cmd.>"}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if _, err := js.Publish(ctx, "cmd.o1.n1", []byte("reboot")); err != nil {
		t.Fatalf("publish: %v", err)
	}

	// Restart while paused: Stop must resume the process so SIGTERM lands.
	np.Pause()
	np.Restart()
	if np.Port() != port {
		t.Fatalf("port after Restart = %d, want %d", np.Port(), port)
	}
	testserver.WaitFor(t, 5*time.Second, "reconnect after Restart", nc.IsConnected)
	st, err := js.Stream(ctx, "CMDS")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	msg, err := st.GetMsg(ctx, 1)
	if err != nil || string(msg.Data) != "reboot" {
		t.Fatalf("message 1 after restart: %v %v", msg, err)
	}

	np.Kill()
	testserver.WaitFor(t, 5*time.Second, "disconnect after Kill", func() bool { return !nc.IsConnected() })
	np.Restart()
	testserver.WaitFor(t, 5*time.Second, "reconnect after Kill+Restart", nc.IsConnected)
	if _, err := nc.Request("svc.echo", []byte("x"), 2*time.Second); err != nil {
		t.Fatalf("request after Kill+Restart: %v", err)
	}
}

func TestKafkaRestartKeepsRecords(t *testing.T) {
	t.Parallel()
	k := testserver.StartKafka(t, testserver.KafkaOptions{SeedTopics: []string{"events"}, Partitions: 1})
	brokers := k.Brokers()
	if len(brokers) != 1 || brokers[0] != k.Cluster().ListenAddrs()[0] {
		t.Fatalf("Brokers() = %v, cluster listens on %v", brokers, k.Cluster().ListenAddrs())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	if err := prod.ProduceSync(ctx, &kgo.Record{Topic: "events", Key: []byte("o1/n1"), Value: []byte("v1")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	prod.Close()
	if v := consumeOne(ctx, t, k.Brokers(), "events"); v != "v1" {
		t.Fatalf("consumed %q before restart, want v1", v)
	}

	old := k.Cluster()
	k.Restart()
	if got := k.Brokers(); got[0] != brokers[0] {
		t.Fatalf("Brokers() after Restart = %v, want %v", got, brokers)
	}
	if k.Cluster() == old || k.Cluster() == nil {
		t.Fatal("Cluster() not replaced by Restart")
	}
	if v := consumeOne(ctx, t, k.Brokers(), "events"); v != "v1" {
		t.Fatalf("consumed %q after restart, want v1", v)
	}
	k.Close()
	k.Close() // idempotent
}

func TestWaitFor(t *testing.T) {
	t.Parallel()
	n := 0
	testserver.WaitFor(t, time.Second, "third poll", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}

	f := &fatalTB{TB: t}
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		testserver.WaitFor(f, 50*time.Millisecond, "the impossible", func() bool { return false })
	}()
	<-done
	if !strings.Contains(f.msg, "the impossible") {
		t.Fatalf("WaitFor failure message = %q, want it to name what was awaited", f.msg)
	}
	// It must not give up before its timeout; how soon after is speed,
	// not behaviour, and is not asserted (it returned: <-done above).
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("WaitFor gave up after %v, before its 50ms timeout", d)
	}
}

func TestFreePort(t *testing.T) {
	t.Parallel()
	p := testserver.FreePort(t)
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		t.Fatalf("listen on FreePort %d: %v", p, err)
	}
	l.Close()
}

// fatalTB records Fatalf and ends the goroutine, as testing.T does, without
// failing the real test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// mqttConnect opens an MQTT v5 session on addr; onMsg, if set, gets every
// PUBLISH.
func mqttConnect(t *testing.T, addr, clientID string, onMsg func(*paho.Publish)) (*paho.Client, *paho.Connack) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	cfg := paho.ClientConfig{ClientID: clientID, Conn: conn}
	if onMsg != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { onMsg(pr.Packet); return true, nil },
		}
	}
	c := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true})
	if err != nil {
		conn.Close()
		t.Fatalf("MQTT connect to %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return c, ca
}

// rawMQTTConnect sends an MQTT 3.1.1 CONNECT and expects CONNACK "accepted".
func rawMQTTConnect(conn net.Conn, clientID string) error {
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, byte(len(clientID))}
	pkt := append([]byte{0x10, byte(len(vh) + len(clientID))}, vh...)
	pkt = append(pkt, clientID...)
	if _, err := conn.Write(pkt); err != nil {
		return fmt.Errorf("write CONNECT: %w", err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil {
		return fmt.Errorf("read CONNACK: %w", err)
	}
	if ack[0] != 0x20 || ack[1] != 2 || ack[3] != 0 {
		return fmt.Errorf("CONNACK = % x, want 20 02 xx 00", ack)
	}
	return nil
}

func natsConnect(t *testing.T, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.Timeout(2 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatalf("nats connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// consumeOne reads the first record of topic with a fresh client.
func consumeOne(ctx context.Context, t *testing.T, brokers []string, topic string) string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("no record in %s: %v", topic, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s/%d: %v", topic, p, err) })
		if rs := fs.Records(); len(rs) > 0 {
			return string(rs[0].Value)
		}
	}
}
