package ingest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/bridgetest"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	"github.com/nr-bridge/nr-bridge/sinks/natsjs"
)

// slowAckSink writes at once but reports each write done only after delay,
// as a backbone with a slow PubAck does: at any moment many messages are
// written and not yet acknowledged.
type slowAckSink struct {
	bridge.Sink
	delay time.Duration
}

func (s slowAckSink) Write(ctx context.Context, m *bridge.Message, done func(error)) {
	s.Sink.Write(ctx, m, func(err error) { time.AfterFunc(s.delay, func() { done(err) }) })
}

// openJetStreamSink connects to natsURL and opens a JetStream sink, both
// closed at cleanup (after the receivers using it, registered later, stop).
func openJetStreamSink(t *testing.T, natsURL, name string) *natsjs.Sink {
	t.Helper()
	nc, err := natsconn.Connect(natsconn.Config{URL: natsURL}, name, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sink, err := bridgetest.StartNATSSink(ctx, nc, natsjsConfig(), testLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sink.Close(context.Background()); err != nil {
			t.Errorf("close sink: %v", err)
		}
	})
	return sink
}

// TestStopWaitsForInflightWrites is Worker.Stop's promise: a stopping
// worker waits until every message it holds is written and its PUBACK
// sent. Events without msg_id (nothing for JetStream to deduplicate) flow
// under load through a sink whose acknowledgements lag; the receiver stops
// mid-stream while hundreds are written and not yet acked, and a new
// receiver with the same client ID takes the session over. A message that
// was written but not acked at the stop would be redelivered and stored
// twice: every payload must be in the stream exactly once.
func TestStopWaitsForInflightWrites(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	_, js := testclient.ConnectNATS(t, ns.URL())
	sink := openJetStreamSink(t, ns.URL(), "test-drain")
	cfg := mqttConfig(mq.URL(), "drain")
	cfg.Workers = 1 // one session: redeliveries, backlog and the sentinel stay in order

	r := runWorkers(t, cfg, slowAckSink{Sink: sink, delay: 100 * time.Millisecond})
	const total = 3000
	pub := testclient.ConnectMQTT(t, mq.URL(), "node-drain")
	published := make(chan error, 1)
	go func() {
		for i := 0; i < total; i++ {
			if err := pub.TryPublish(fmt.Sprintf("org/o1/node/n%d/events", i%10), fmt.Appendf(nil, "p-%d", i), nil); err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()
	testserver.WaitFor(t, 30*time.Second, "messages written and not yet acked", func() bool {
		return testclient.StreamCount(js, "NR_EVENTS") >= total/10 && r.Workers()[0].Inflight() >= 20
	})
	held := r.Workers()[0].Inflight()
	stopWorkers(t, r, 20*time.Second)
	if n := r.Workers()[0].Inflight(); n != 0 {
		t.Fatalf("after Stop the worker still holds %d messages (held %d when asked to stop)", n, held)
	}
	if err := <-published; err != nil {
		t.Fatalf("publish: %v", err)
	}

	r2 := runWorkers(t, cfg, sink)
	defer stopWorkers(t, r2, 10*time.Second)
	// Positive control: the broker resends un-acked messages first, then
	// the backlog, then the sentinel; one worker writes them in that order.
	pub.Publish("org/o1/node/n0/events", []byte("sentinel"), nil)
	var msgs []testclient.StreamMsg
	testserver.WaitFor(t, 60*time.Second, "the sentinel stored", func() bool {
		if testclient.StreamCount(js, "NR_EVENTS") < total+1 {
			return false
		}
		msgs = testclient.ReadStream(t, js, "NR_EVENTS")
		return string(msgs[len(msgs)-1].Data) == "sentinel"
	})
	seen := map[string]int{}
	for _, m := range msgs {
		seen[string(m.Data)]++
	}
	var twice []string
	for p, n := range seen {
		if n != 1 {
			twice = append(twice, fmt.Sprintf("%s x%d", p, n))
		}
	}
	if len(msgs) != total+1 || len(seen) != total+1 || len(twice) != 0 {
		t.Fatalf("NR_EVENTS has %d messages, %d distinct payloads, want %d of each (stop held %d); stored more than once: %v",
			len(msgs), len(seen), total+1, held, firstN(twice, 10))
	}
	for i := 0; i < total; i++ {
		if seen[fmt.Sprintf("p-%d", i)] != 1 {
			t.Fatalf("event p-%d stored %d times, want 1", i, seen[fmt.Sprintf("p-%d", i)])
		}
	}
}
