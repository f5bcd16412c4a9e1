package tracker_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/ingest"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/internal/natsstatus"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	"github.com/nr-bridge/nr-bridge/internal/tracker"
)

// ackCounter counts the receiver's acks and forwarded messages by kind.
type ackCounter struct {
	bridge.NopMetrics
	mu        sync.Mutex
	acks      int
	forwarded map[bridge.Kind]int
}

func (m *ackCounter) AckSent() {
	m.mu.Lock()
	m.acks++
	m.mu.Unlock()
}

func (m *ackCounter) MessageForwarded(k bridge.Kind, _ time.Duration) {
	m.mu.Lock()
	m.forwarded[k]++
	m.mu.Unlock()
}

func (m *ackCounter) counts() (acks, events, replies int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.acks, m.forwarded[bridge.KindEvents], m.forwarded[bridge.KindReply]
}

// syncBuffer is a log sink safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

// The status store stalling (its NATS connection stops getting answers),
// and then its reply queue filling up, holds back neither forwarding nor
// acking: every event and reply reaches its stream and is acked to the
// broker while the store is still stalled, the full queue drops status
// updates (WARN), never replies; once the store answers again, a reply
// updates its command's status.
//
// The store runs on its own connection through a proxy to the same
// nats-server as the sink, so that only the store is slow.
func TestSlowStatusStoreDoesNotHoldBackMQTT(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	proxy := testserver.StartStallProxy(t, fmt.Sprintf("127.0.0.1:%d", ns.Port()))
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	storeNC, err := nats.Connect("nats://" + proxy.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(storeNC.Close)
	storeJS, err := jetstream.New(storeNC)
	if err != nil {
		t.Fatal(err)
	}
	store, err := natsstatus.New(ctx, storeJS, natsstatus.Config{Bucket: "NR_COMMAND_STATUS"},
		natsstatus.Options{Manage: true, Replicas: 1, TTL: time.Hour}, log)
	if err != nil {
		t.Fatal(err)
	}
	tracker := tracker.New(tracker.Config{Grace: time.Hour}, log, nil)
	if err := tracker.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	tracker.Attach(store)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = tracker.Close(ctx) // after the receiver stopped (cleanups run last-in first-out)
	})

	nc, err := natsconn.Connect(natsconn.Config{URL: ns.URL()}, "test-slow-status", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sink, err := bridgetest.StartNATSSink(ctx, nc, bridgetest.NATSSinkConfig(), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = sink.Close(ctx)
	})
	m := &ackCounter{forwarded: map[bridge.Kind]int{}}
	mcfg := bridgetest.MQTTConfig(mq.URL(), "slow-status")
	mcfg.Workers, mcfg.MaxInflight, mcfg.ReconnectMax = 2, 500, time.Second
	r := ingest.NewReceiver(mcfg, tracker.WrapSink(sink), log, m)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Errorf("stop receiver: %v", err)
		}
	})
	testserver.WaitFor(t, 10*time.Second, "workers ready", func() bool { return r.Ready() == nil })
	_, js := testclient.ConnectNATS(t, ns.URL())

	// The store stops answering. Four reply workers each wait on it (5 s
	// per update); the 1,024-slot queue behind them fills: 1,500 replies
	// are more than both.
	proxy.SetStalled(true)
	const nodes, replies, events = 3, 500, 100
	var wg sync.WaitGroup
	for n := range nodes {
		pub := testclient.ConnectMQTT(t, mq.URL(), fmt.Sprintf("node-%d", n))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range replies {
				rp := testclient.Props("msg_id", fmt.Sprintf("r-%d-%d", n, i))
				rp.CorrelationData = fmt.Appendf(nil, "corr-%d-%d", n, i)
				if err := pub.TryPublish(fmt.Sprintf("org/acme/node/n%d/reply", n), fmt.Appendf(nil, `{"i":%d}`, i), rp); err != nil {
					t.Errorf("publish reply: %v", err)
					return
				}
				if i < events {
					if err := pub.TryPublish(fmt.Sprintf("org/acme/node/n%d/events", n), fmt.Appendf(nil, `{"i":%d}`, i),
						testclient.Props("msg_id", fmt.Sprintf("e-%d-%d", n, i))); err != nil {
						t.Errorf("publish event: %v", err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()

	testserver.WaitFor(t, 30*time.Second, "every message forwarded and acked", func() bool {
		acks, _, _ := m.counts()
		return acks >= nodes*(replies+events)
	})
	// Positive control: the queue did fill while the store was stalled.
	testserver.WaitFor(t, 10*time.Second, "a status update dropped for a full queue", func() bool {
		return logs.count("reply status update dropped: status store too slow") > 0
	})
	acks, fwdEvents, fwdReplies := m.counts()
	if acks != nodes*(replies+events) || fwdEvents != nodes*events || fwdReplies != nodes*replies {
		t.Fatalf("acks %d, forwarded events %d replies %d; want %d, %d, %d", acks, fwdEvents, fwdReplies,
			nodes*(replies+events), nodes*events, nodes*replies)
	}
	if got := testclient.StreamCount(js, "NR_REPLIES"); got != nodes*replies {
		t.Fatalf("NR_REPLIES has %d messages, want %d", got, nodes*replies)
	}
	if got := testclient.StreamCount(js, "NR_EVENTS"); got != nodes*events {
		t.Fatalf("NR_EVENTS has %d messages, want %d", got, nodes*events)
	}
	if got := testclient.StreamCount(js, "NR_DLQ"); got != 0 {
		t.Fatalf("NR_DLQ has %d messages, want 0", got)
	}
	if n := logs.count("reply status update dropped"); n < 1 {
		t.Fatalf("%d drop warnings", n)
	}

	// The store answers again: a command's reply is recorded.
	proxy.SetStalled(false)
	now := time.Now().UTC()
	if _, err := store.Put(ctx, &bridge.CommandStatus{
		Org: "acme", CorrelationID: "after-stall", Node: "n0", Type: "reboot", Topic: "org/acme/node/n0/cmd",
		Source: bridge.SourceHTTP, Status: bridge.StatusPublished, IssuedAt: now, ExpiresAt: now.Add(time.Hour),
		AcceptedAt: now, PublishedAt: now,
	}, 0); err != nil {
		t.Fatal(err)
	}
	node := testclient.ConnectMQTT(t, mq.URL(), "node-after")
	rp := testclient.Props("msg_id", "r-after")
	rp.CorrelationData = []byte("after-stall")
	node.Publish("org/acme/node/n0/reply", []byte(`{"ok":true}`), rp)
	testserver.WaitFor(t, 30*time.Second, "the reply recorded once the store answers", func() bool {
		s, err := tracker.Get(ctx, "acme", "after-stall")
		return err == nil && s.Status == bridge.StatusReplied && len(s.Replies) == 1
	})
	t.Logf("%d replies and %d events forwarded and acked with the status store stalled; %d drop warnings",
		fwdReplies, fwdEvents, logs.count("reply status update dropped"))
}
