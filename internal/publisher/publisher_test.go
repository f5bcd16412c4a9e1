package publisher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"go.uber.org/goleak"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// pubNow is the publisher's clock in these tests: a whole second, so the
// remaining TTL of a command issued at pubNow is a whole number of seconds.
var pubNow = time.Unix(time.Now().Unix(), 0)

func pubConfig(brokerURL, clientID string) *mqttconn.Config {
	return &mqttconn.Config{
		URL:            brokerURL,
		ClientID:       clientID,
		ShareGroup:     "nr-listeners",
		Workers:        1,
		SessionExpiry:  time.Minute,
		KeepAlive:      30 * time.Second,
		ConnectTimeout: 5 * time.Second,
		ReconnectMin:   50 * time.Millisecond,
		ReconnectMax:   200 * time.Millisecond,
		MaxInflight:    100,
		AckInterval:    10 * time.Millisecond,
		PublishTimeout: 5 * time.Second,
	}
}

// pubLogger logs to the test output at Debug, where a failing test shows
// it.
func pubLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewJSONHandler(pubTestWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type pubTestWriter struct{ t *testing.T }

func (w pubTestWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// startPublisher starts a publisher with the clock at pubNow and waits for
// its connection.
func startPublisher(t *testing.T, cfg *mqttconn.Config) *Publisher {
	t.Helper()
	p := New(cfg, pubLogger(t), nil)
	p.now = func() time.Time { return pubNow }
	if err := p.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	testserver.WaitFor(t, 10*time.Second, "publisher connected", func() bool { return p.Ready() == nil })
	return p
}

func pubCommand(t *testing.T, corr string, issuedAt int64, ttl int) bridge.Command {
	t.Helper()
	body := fmt.Sprintf(`{"type":"reboot","version":1,"correlation_id":%q,"issued_at":%d,"ttl_sec":%d,"payload":{"delay":5},"extra":[1, 2]}`, corr, issuedAt, ttl)
	c, err := bridge.ParseCommand([]byte(body), time.Unix(issuedAt, 0), bridge.CommandLimits{})
	if err != nil {
		t.Fatalf("ParseCommand: %v", err)
	}
	return c
}

// waitReceived waits until sub got n messages and returns them.
func waitReceived(t *testing.T, sub *testclient.MQTT, n int) []string {
	t.Helper()
	testserver.WaitFor(t, 10*time.Second, fmt.Sprintf("%d messages", n), func() bool { return len(sub.Received()) >= n })
	var topics []string
	for _, m := range sub.Received() {
		topics = append(topics, m.Topic)
	}
	return topics
}

func TestPublisherPublishesNodeAndBroadcast(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	sub := testclient.ConnectMQTT(t, broker.URL(), "sub-"+t.Name(), "org/#")
	p := startPublisher(t, pubConfig(broker.URL(), "bridge-a"))
	if got := p.ClientID(); got != "bridge-a-pub" {
		t.Fatalf("ClientID = %q, want bridge-a-pub", got)
	}

	node := pubCommand(t, "c-node", pubNow.Unix(), 60)
	res, err := p.Publish(context.Background(), bridge.Target{Org: "o1", Node: "n1"}, node, bridge.SourceHTTP)
	if err != nil {
		t.Fatalf("Publish node: %v", err)
	}
	if want := (bridge.PublishResult{Topic: "org/o1/node/n1/cmd", ReasonCode: 0}); res != want {
		t.Fatalf("Publish node = %+v, want %+v", res, want)
	}
	// 30 s of the TTL are gone by the publisher's clock.
	bcast := pubCommand(t, "c-bcast", pubNow.Unix()-30, 60)
	res, err = p.Publish(context.Background(), bridge.Target{Org: "o1"}, bcast, bridge.SourceStream)
	if err != nil {
		t.Fatalf("Publish broadcast: %v", err)
	}
	if want := (bridge.PublishResult{Topic: "org/o1/broadcast/cmd"}); res != want {
		t.Fatalf("Publish broadcast = %+v, want %+v", res, want)
	}

	waitReceived(t, sub, 2)
	got := sub.Received()
	if len(got) != 2 {
		t.Fatalf("received %d messages, want 2", len(got))
	}
	for i, want := range []struct {
		topic, corr, response string
		expiry                uint32
		raw                   []byte
	}{
		{"org/o1/node/n1/cmd", "c-node", "org/o1/node/n1/reply", 60, node.Raw()},
		{"org/o1/broadcast/cmd", "c-bcast", "", 30, bcast.Raw()},
	} {
		m := got[i]
		if m.Topic != want.topic || m.QoS != 1 || m.Retain || !bytes.Equal(m.Payload, want.raw) {
			t.Errorf("message %d: topic %q qos %d retain %v payload %q; want %q qos 1, not retained, payload %q",
				i, m.Topic, m.QoS, m.Retain, m.Payload, want.topic, want.raw)
			continue
		}
		pp := m.Properties
		if pp == nil || pp.ContentType != "application/json" || string(pp.CorrelationData) != want.corr || pp.ResponseTopic != want.response {
			t.Errorf("message %d: properties %+v; want content type application/json, correlation %q, response topic %q", i, pp, want.corr, want.response)
			continue
		}
		// The broker passes on what is left of the expiry: the same, or
		// one second less when its clock ticked in between.
		if pp.MessageExpiry == nil || *pp.MessageExpiry > want.expiry || *pp.MessageExpiry < want.expiry-1 {
			t.Errorf("message %d: message expiry %v, want %d (or %d)", i, pp.MessageExpiry, want.expiry, want.expiry-1)
		}
	}
}

func TestPublisherNoSubscribers(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	p := startPublisher(t, pubConfig(broker.URL(), "bridge-nosub"))
	res, err := p.Publish(context.Background(), bridge.Target{Org: "o1", Node: "n1"}, pubCommand(t, "c-1", pubNow.Unix(), 60), bridge.SourceHTTP)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if want := (bridge.PublishResult{Topic: "org/o1/node/n1/cmd", ReasonCode: bridge.ReasonNoMatchingSubscribers}); res != want {
		t.Fatalf("Publish = %+v, want %+v", res, want)
	}
}

func TestPublisherRefusesBeforePublishing(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	sub := testclient.ConnectMQTT(t, broker.URL(), "sub-"+t.Name(), "org/#")
	cfg := pubConfig(broker.URL(), "bridge-scope")
	cfg.OrgID = "o1"
	p := startPublisher(t, cfg)
	valid := pubCommand(t, "c-1", pubNow.Unix(), 60)

	tests := []struct {
		name    string
		target  bridge.Target
		cmd     bridge.Command
		wantErr []error
		wantMsg string
	}{
		{"wildcard org", bridge.Target{Org: "o+", Node: "n1"}, valid, []error{bridge.ErrInvalidID, bridge.ErrInvalidTarget},
			`publish command: org id "o+": must be 1 to 64 characters of A-Z a-z 0-9 _ -: invalid id`},
		{"hash node", bridge.Target{Org: "o1", Node: "#"}, valid, []error{bridge.ErrInvalidID},
			`publish command: node id "#": must be 1 to 64 characters of A-Z a-z 0-9 _ -: invalid id`},
		{"slash node", bridge.Target{Org: "o1", Node: "a/b"}, valid, []error{bridge.ErrInvalidID}, ""},
		{"NUL org", bridge.Target{Org: "o\x00", Node: "n1"}, valid, []error{bridge.ErrInvalidID}, ""},
		{"empty org", bridge.Target{}, valid, []error{bridge.ErrInvalidID}, ""},
		{"other org", bridge.Target{Org: "o2", Node: "n1"}, valid, []error{bridge.ErrOutOfScope},
			`publish org/o2/node/n1/cmd: org "o2": command outside the bridge's ORG_ID "o1"`},
		{"expired", bridge.Target{Org: "o1", Node: "n1"}, pubCommand(t, "c-old", pubNow.Unix()-60, 60), []error{bridge.ErrExpired},
			"publish org/o1/node/n1/cmd: command expired at " + pubNow.UTC().Format(time.RFC3339) + ", 0s ago"},
		{"not parsed", bridge.Target{Org: "o1", Node: "n1"}, bridge.Command{Type: "x", CorrelationID: "c", IssuedAt: pubNow.Unix(), TTLSec: 60}, nil,
			"publish org/o1/node/n1/cmd: command not built by ParseCommand"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.Publish(context.Background(), tt.target, tt.cmd, bridge.SourceHTTP)
			if err == nil {
				t.Fatal("Publish succeeded, want an error")
			}
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("error %q does not match %v", err, want)
				}
			}
			if tt.wantMsg != "" && err.Error() != tt.wantMsg {
				t.Errorf("error = %q, want %q", err, tt.wantMsg)
			}
			if tt.wantErr != nil && bridge.Retryable(err) {
				t.Errorf("Retryable(%q) = true, want false", err)
			}
		})
	}

	// Nothing went out: the next valid command is the first message.
	if _, err := p.Publish(context.Background(), bridge.Target{Org: "o1", Node: "n1"}, valid, bridge.SourceHTTP); err != nil {
		t.Fatalf("Publish sentinel: %v", err)
	}
	if got := waitReceived(t, sub, 1); len(got) != 1 || got[0] != "org/o1/node/n1/cmd" {
		t.Fatalf("received %v, want only the sentinel on org/o1/node/n1/cmd", got)
	}
}

func TestPublisherBrokerDown(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	p := startPublisher(t, pubConfig(broker.URL(), "bridge-down"))
	cmd := pubCommand(t, "c-1", pubNow.Unix(), 60)

	broker.Stop()
	testserver.WaitFor(t, 10*time.Second, "publisher sees the broker down", func() bool { return p.Ready() != nil })
	_, err := p.Publish(context.Background(), bridge.Target{Org: "o1", Node: "n1"}, cmd, bridge.SourceStream)
	if !errors.Is(err, bridge.ErrNotConnected) || !errors.Is(err, autopaho.ConnectionDownError) {
		t.Fatalf("Publish with the broker down: %v, want ErrNotConnected and autopaho.ConnectionDownError", err)
	}
	if !bridge.Retryable(err) {
		t.Fatalf("Retryable(%q) = false, want true", err)
	}

	broker.Restart()
	testserver.WaitFor(t, 10*time.Second, "publisher reconnected", func() bool { return p.Ready() == nil })
	if _, err := p.Publish(context.Background(), bridge.Target{Org: "o1", Node: "n1"}, cmd, bridge.SourceStream); err != nil {
		t.Fatalf("Publish after restart: %v", err)
	}
}

func TestPublisherRefusedReasonCode(t *testing.T) {
	acl := filepath.Join(t.TempDir(), "acl")
	// Anonymous clients may read everything under org/ and write node
	// commands only: a broadcast is refused with 0x87.
	if err := os.WriteFile(acl, []byte("topic read org/#\ntopic write org/+/node/+/cmd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{ExtraConfig: []string{"acl_file " + acl}})
	p := startPublisher(t, pubConfig(broker.URL(), "bridge-acl"))
	cmd := pubCommand(t, "c-1", pubNow.Unix(), 60)

	_, err := p.Publish(context.Background(), bridge.Target{Org: "o1"}, cmd, bridge.SourceHTTP)
	var refused *bridge.RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("Publish broadcast: %v, want a *RefusedError", err)
	}
	if refused.ReasonCode != 0x87 || refused.Topic != "org/o1/broadcast/cmd" || refused.Temporary() || bridge.Retryable(err) {
		t.Fatalf("refusal %+v (temporary %v, retryable %v), want 0x87 on org/o1/broadcast/cmd, permanent", refused, refused.Temporary(), bridge.Retryable(err))
	}
	if want := "broker refused org/o1/broadcast/cmd: reason code 0x87 (not authorized)"; err.Error() != want {
		t.Fatalf("error = %q, want %q", err, want)
	}
	// The connection survives a refusal.
	if _, err := p.Publish(context.Background(), bridge.Target{Org: "o1", Node: "n1"}, cmd, bridge.SourceHTTP); err != nil {
		t.Fatalf("Publish node command after the refusal: %v", err)
	}
}

func TestPublisherTimeout(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	proxy := startFreezeProxy(t, broker.Addr())
	cfg := pubConfig("tcp://"+proxy.addr(), "bridge-timeout")
	cfg.PublishTimeout = 300 * time.Millisecond
	p := startPublisher(t, cfg)

	proxy.freeze()
	_, err := p.Publish(context.Background(), bridge.Target{Org: "o1", Node: "n1"}, pubCommand(t, "c-1", pubNow.Unix(), 60), bridge.SourceStream)
	if !errors.Is(err, bridge.ErrPublishTimeout) || !bridge.Retryable(err) {
		t.Fatalf("Publish through a frozen link: %v, want ErrPublishTimeout (retryable)", err)
	}
	if want := "publish org/o1/node/n1/cmd: no PUBACK from the broker in time (300ms)"; err.Error() != want {
		t.Fatalf("error = %q, want %q", err, want)
	}

	// A caller's own deadline is reported as such, not as a timeout.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = p.Publish(ctx, bridge.Target{Org: "o1", Node: "n1"}, pubCommand(t, "c-2", pubNow.Unix(), 60), bridge.SourceStream)
	if !errors.Is(err, context.Canceled) || errors.Is(err, bridge.ErrPublishTimeout) {
		t.Fatalf("Publish with a cancelled ctx: %v, want context.Canceled", err)
	}
}

func TestPublisherStop(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	leaks := goleak.IgnoreCurrent()
	p := New(pubConfig(broker.URL(), "bridge-stop"), pubLogger(t), nil)
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testserver.WaitFor(t, 10*time.Second, "publisher connected", func() bool { return p.Ready() == nil })
	cmd := pubCommand(t, "c-1", time.Now().Unix(), 60)
	if _, err := p.Publish(context.Background(), bridge.Target{Org: "o1", Node: "n1"}, cmd, bridge.SourceHTTP); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := p.Publish(context.Background(), bridge.Target{Org: "o1", Node: "n1"}, cmd, bridge.SourceHTTP); !errors.Is(err, bridge.ErrClosed) {
		t.Fatalf("Publish after Stop: %v, want ErrClosed", err)
	}
	if err := p.Ready(); !errors.Is(err, bridge.ErrClosed) {
		t.Fatalf("Ready after Stop: %v, want ErrClosed", err)
	}
	goleak.VerifyNone(t, leaks)
}

func TestMessageExpiry(t *testing.T) {
	for _, tt := range []struct {
		remaining time.Duration
		want      uint32
	}{
		{time.Nanosecond, 1},
		{time.Second, 1},
		{time.Second + time.Nanosecond, 2},
		{59500 * time.Millisecond, 60},
		{60 * time.Second, 60},
		{200 * 365 * 24 * time.Hour, 1<<32 - 1},
	} {
		if got := messageExpiry(tt.remaining); got != tt.want {
			t.Errorf("messageExpiry(%s) = %d, want %d", tt.remaining, got, tt.want)
		}
	}
}

func TestRetryable(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{fmt.Errorf("x: %w", bridge.ErrNotConnected), true},
		{fmt.Errorf("x: %w", bridge.ErrPublishTimeout), true},
		{fmt.Errorf("x: %w", bridge.ErrClosed), true},
		{errors.New("something unexpected"), true},
		{&bridge.RefusedError{ReasonCode: 0x97}, true},
		{&bridge.RefusedError{ReasonCode: 0x87}, false},
		{&bridge.RefusedError{ReasonCode: 0x90}, false},
		{fmt.Errorf("x: %w", bridge.ErrMalformed), false},
		{&bridge.FieldError{Field: "ttl_sec", Reason: "bad"}, false},
		{fmt.Errorf("x: %w", bridge.ErrExpired), false},
		{fmt.Errorf("x: %w", bridge.ErrOutOfScope), false},
		{fmt.Errorf("x: %w", bridge.ErrInvalidID), false},
		{fmt.Errorf("x: %w", bridge.ErrInvalidTarget), false},
	} {
		if got := bridge.Retryable(tt.err); got != tt.want {
			t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// freezeProxy forwards TCP to a real broker until freeze, after which it
// holds what the client sends: the connection stays up but no PUBACK comes
// back, as with a broker that hangs.
type freezeProxy struct {
	ln     net.Listener
	once   sync.Once
	frozen chan struct{}
}

func startFreezeProxy(t *testing.T, target string) *freezeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, frozen: make(chan struct{})}
	var wg sync.WaitGroup
	var conns []net.Conn
	var connsMu sync.Mutex
	t.Cleanup(func() {
		_ = ln.Close()
		connsMu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, c, s)
			connsMu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); p.pipe(s, c) }()
			go func() { defer wg.Done(); _, _ = io.Copy(c, s) }()
		}
	}()
	return p
}

func (p *freezeProxy) addr() string { return p.ln.Addr().String() }

// pipe copies client to server, stopping (without closing) while frozen.
func (p *freezeProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			select {
			case <-p.frozen:
				return // frozen: drop everything from now on
			default:
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *freezeProxy) freeze() { p.once.Do(func() { close(p.frozen) }) }
