package testclient

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamMsg is a message read back from a stream.
type StreamMsg struct {
	Subject string
	Header  nats.Header
	Data    []byte
}

// ConnectNATS connects to url and closes the connection at cleanup.
func ConnectNATS(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatalf("testclient: connect NATS %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("testclient: jetstream: %v", err)
	}
	return nc, js
}

// StreamCount returns the number of messages in stream, or -1 while the
// stream cannot be read.
func StreamCount(js jetstream.JetStream, stream string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return -1
	}
	info, err := s.Info(ctx)
	if err != nil {
		return -1
	}
	return int(info.State.Msgs)
}

// ReadStream reads every message of stream in order with an ordered
// consumer.
func ReadStream(t testing.TB, js jetstream.JetStream, stream string) []StreamMsg {
	t.Helper()
	n := StreamCount(js, stream)
	if n < 0 {
		t.Fatalf("testclient: stream %s not readable", stream)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("testclient: ordered consumer on %s: %v", stream, err)
	}
	out := make([]StreamMsg, 0, n)
	for len(out) < n {
		batch, err := c.Fetch(min(n-len(out), 1000), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("testclient: fetch %s: %v", stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			out = append(out, StreamMsg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
			got++
		}
		if err := batch.Error(); err != nil && got == 0 {
			t.Fatalf("testclient: fetch %s after %d of %d: %v", stream, len(out), n, err)
		}
	}
	return out
}
