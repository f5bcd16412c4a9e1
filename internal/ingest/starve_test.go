package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/ingest"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// freezeProxy forwards TCP to a broker and can stop forwarding the broker's
// bytes to one connection (in accept order) while everything else flows:
// that client receives nothing and the broker holds its messages in flight,
// as Mochi and Comqtt do to a client whose send quota ran out. A new
// connection of the same client is not frozen, so a reconnect cures it,
// as it does on those brokers.
type freezeProxy struct {
	ln     net.Listener
	mu     sync.Mutex
	frozen map[int]bool
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startFreezeProxy(t *testing.T, target string) *freezeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, frozen: map[int]bool{}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); _, _ = io.Copy(s, c); s.Close(); c.Close() }()
			go func() { defer p.wg.Done(); p.copyBroker(i, c, s); s.Close(); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// copyBroker copies the broker's bytes to client connection i, dropping
// them from the moment i is frozen: the client reads nothing more, and the
// connection stays open.
func (p *freezeProxy) copyBroker(i int, client, broker net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := broker.Read(buf)
		p.mu.Lock()
		frozen := p.frozen[i]
		p.mu.Unlock()
		if n > 0 && !frozen {
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *freezeProxy) freeze(i int) {
	p.mu.Lock()
	p.frozen[i] = true
	p.mu.Unlock()
}

func (p *freezeProxy) url() string { return "tcp://" + p.ln.Addr().String() }

// starveMetrics counts WorkerStarved by worker on top of NopMetrics.
type starveMetrics struct {
	bridge.NopMetrics
	mu sync.Mutex
	n  map[string]int
}

func (m *starveMetrics) WorkerStarved(w string) {
	m.mu.Lock()
	m.n[w]++
	m.mu.Unlock()
}

func (m *starveMetrics) counts() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for k, v := range m.n {
		out[k] = v
	}
	return out
}

// recordSink stores the payloads it is given, each write succeeding.
type recordSink struct {
	mu   sync.Mutex
	seen map[string]int
}

func (s *recordSink) Write(_ context.Context, m *bridge.Message, done func(error)) {
	s.mu.Lock()
	s.seen[string(m.Payload)]++
	s.mu.Unlock()
	done(nil)
}

func (s *recordSink) Close(context.Context) error { return nil }

func (s *recordSink) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

// lockedBuffer is a log destination the workers write to concurrently.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStarvedWorkerReconnects: on Mosquitto, 400 events over two workers
// make no worker look starved; then the broker's bytes to one worker stop
// (it holds nothing, its sibling keeps receiving), and within
// MQTT_STARVE_TIMEOUT that worker logs the WARN, is counted once, and
// reconnects with its session, which brings every held event: 800
// distinct events stored.
func TestStarvedWorkerReconnects(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	proxy := startFreezeProxy(t, mq.Addr())
	cfg := mqttConfig(proxy.url(), "starve")
	cfg.StarveTimeout = 500 * time.Millisecond
	sink := &recordSink{seen: map[string]int{}}
	metrics := &starveMetrics{n: map[string]int{}}
	var logs lockedBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r := ingest.NewReceiver(cfg, sink, log, metrics)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopWorkers(t, r, 10*time.Second) })
	testserver.WaitFor(t, 10*time.Second, "workers ready", func() bool { return r.Ready() == nil })

	pub := testclient.ConnectMQTT(t, mq.URL(), "starve-pub")
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			pub.Publish(fmt.Sprintf("org/o1/node/n%d/events", i%20), fmt.Appendf(nil, `{"seq":%d}`, i), nil)
		}
	}
	publish(0, 400)
	testserver.WaitFor(t, 10*time.Second, "400 events stored", func() bool { return sink.distinct() == 400 })
	time.Sleep(3 * cfg.StarveTimeout) // idle: nobody receives, nobody is starved
	if got := metrics.counts(); len(got) != 0 {
		t.Fatalf("starved reconnects with even delivery on Mosquitto: %v, want none", got)
	}

	proxy.freeze(0) // the first worker connection
	publish(400, 800)
	testserver.WaitFor(t, 20*time.Second, "800 events stored", func() bool { return sink.distinct() == 800 })
	got := metrics.counts()
	total := 0
	for _, n := range got {
		total += n
	}
	if total != 1 {
		t.Fatalf("starved reconnects = %v, want exactly one", got)
	}
	out := logs.String()
	if c := strings.Count(out, "MQTT worker starved"); c != 1 {
		t.Fatalf("%d starved WARNs, want 1:\n%s", c, out)
	}
	for w := range got {
		if !strings.Contains(out, `"client_id":"`+w+`"`) || !strings.Contains(out, "send quota") {
			t.Fatalf("the WARN does not name %s and the broker behaviour:\n%s", w, out)
		}
	}
}

// TestReceiveMaximumSetting: MQTT_RECEIVE_MAXIMUM is checked, and 0 falls
// back to MQTT_MAX_INFLIGHT (what a worker advertised before it existed).
func TestReceiveMaximumSetting(t *testing.T) {
	for _, tc := range []struct {
		rm      int
		starve  time.Duration
		wantErr string
	}{
		{rm: 0},
		{rm: 65535, starve: time.Second},
		{rm: -1, wantErr: "MQTT_RECEIVE_MAXIMUM must be between 0 and 65535, got -1"},
		{rm: 65536, wantErr: "MQTT_RECEIVE_MAXIMUM must be between 0 and 65535, got 65536"},
		{rm: 10, starve: -time.Second, wantErr: "MQTT_STARVE_TIMEOUT must be >= 0, got -1s"},
	} {
		cfg := mqttConfig("tcp://127.0.0.1:1883", "rm")
		cfg.ReceiveMaximum, cfg.StarveTimeout = tc.rm, tc.starve
		err := cfg.Validate()
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr) {
			t.Errorf("rm=%d starve=%s: Validate() = %v, want %q", tc.rm, tc.starve, err, tc.wantErr)
		}
	}
}
