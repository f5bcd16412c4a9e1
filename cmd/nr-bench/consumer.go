package main

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// consumer reads NR_EVENTS with an ordered JetStream consumer and records,
// per message, the arrival time minus the publisher's timestamp (the ts
// field of nr-sim's payload), and counts distinct msg_ids for lost and
// duplicate counts.
type consumer struct {
	stop func() // ends the reading and closes the connection
	mu   sync.Mutex
	ids  map[string]struct{}
	n    int64 // arrivals, duplicates included
	dup  int64
	// latencies of arrivals while recording
	recording bool
	lat       []time.Duration
	first     time.Time
	last      time.Time
}

func startConsumer(ctx context.Context, natsURL, stream string) (*consumer, error) {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	// The target creates the stream; wait for it.
	var s jetstream.Stream
	for {
		s, err = js.Stream(ctx, stream)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			nc.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	oc, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		nc.Close()
		return nil, err
	}
	var cc jetstream.ConsumeContext
	c := newConsumer(func() {
		cc.Stop()
		nc.Close()
	})
	cc, err = oc.Consume(func(m jetstream.Msg) { c.add(bridge.MsgIDOf(m.Headers().Get(jetstream.MsgIDHeader)), m.Data()) },
		jetstream.PullMaxMessages(2000))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func newConsumer(stop func()) *consumer {
	return &consumer{stop: stop, ids: make(map[string]struct{}, 1<<20)}
}

var tsKey = []byte(`"ts":`)

// add records one arrival: its msg_id and payload (for the ts field).
func (c *consumer) add(id string, data []byte) {
	now := time.Now()
	var ts int64
	if i := bytes.Index(data, tsKey); i >= 0 {
		rest := data[i+len(tsKey):]
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		ts, _ = strconv.ParseInt(string(rest[:j]), 10, 64)
	}
	c.mu.Lock()
	c.n++
	if c.first.IsZero() {
		c.first = now
	}
	c.last = now
	if _, ok := c.ids[id]; ok {
		c.dup++
	} else {
		c.ids[id] = struct{}{}
	}
	if c.recording && ts > 0 {
		c.lat = append(c.lat, now.Sub(time.Unix(0, ts)))
	}
	c.mu.Unlock()
}

// snapshot returns arrivals and distinct messages so far.
func (c *consumer) snapshot() (arrivals, distinct int64, first, last time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, int64(len(c.ids)), c.first, c.last
}

// tally is what a run reports once the stream is drained: received is the
// distinct msg_ids that arrived, lost the messages nr-sim saw acked that
// never arrived, dup the arrivals beyond the first of their msg_id. A
// message the broker acked twice (a redelivery nr-sim counts once) thus
// shows as dup, never as a negative loss.
func (c *consumer) tally(acked int64) (received, lost, dup int64) {
	arrivals, distinct, _, _ := c.snapshot()
	return distinct, max(0, acked-distinct), arrivals - distinct
}

func (c *consumer) record(on bool) {
	c.mu.Lock()
	c.recording = on
	c.mu.Unlock()
}

// percentiles of the recorded latencies.
func (c *consumer) percentiles() (p50, p99, p999 time.Duration, n int) {
	c.mu.Lock()
	l := slices.Clone(c.lat)
	c.mu.Unlock()
	return pcts(l)
}

func pcts(l []time.Duration) (p50, p99, p999 time.Duration, n int) {
	if len(l) == 0 {
		return 0, 0, 0, 0
	}
	slices.Sort(l)
	at := func(q float64) time.Duration { return l[min(len(l)-1, int(q*float64(len(l))))] }
	return at(0.50), at(0.99), at(0.999), len(l)
}

func (c *consumer) close() { c.stop() }
