package metrics_test

import (
	"context"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/metrics"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// TestDuplicatesCountsJetStreamDedupe: against a real nats-server, a second
// write with the same msg_id is acknowledged by JetStream as a duplicate
// and counted once in nr_bridge_duplicates_total{backbone="nats"}; writes
// without a msg_id are stored every time and never counted.
func TestDuplicatesCountsJetStreamDedupe(t *testing.T) {
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	log := bridgetest.Logger()
	nc, err := natsconn.Connect(natsconn.Config{URL: ns.URL()}, "t", log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m := metrics.New(metrics.BackboneNATS, "test")
	sink, err := bridgetest.StartNATSSink(ctx, nc, bridgetest.NATSSinkConfig(), log, m)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close(ctx)

	write := func(msgID, payload string) {
		t.Helper()
		var props []bridge.Property
		if msgID != "" {
			props = []bridge.Property{{Name: "msg_id", Value: msgID}}
		}
		msg := bridge.NewMessage("org/o1/node/n1/events", []byte(payload), time.Now(), "", nil, props)
		done := make(chan error, 1)
		sink.Write(ctx, msg, func(err error) { done <- err })
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("write %q: %v", payload, err)
			}
		case <-ctx.Done():
			t.Fatalf("write %q: no PubAck", payload)
		}
	}
	duplicates := func() float64 {
		t.Helper()
		fam := scrape(t, m.Handler())["nr_bridge_duplicates_total"]
		if fam == nil || len(fam.Metric) != 1 {
			t.Fatalf("nr_bridge_duplicates_total: %v, want one series", fam)
		}
		if got := fam.Metric[0].GetLabel(); len(got) != 1 || got[0].GetName() != "backbone" || got[0].GetValue() != "nats" {
			t.Fatalf("nr_bridge_duplicates_total labels %v, want backbone=nats", got)
		}
		return fam.Metric[0].GetCounter().GetValue()
	}

	write("K1", "first")
	if got := duplicates(); got != 0 {
		t.Fatalf("after one write: nr_bridge_duplicates_total = %v, want 0", got)
	}
	write("K1", "second copy, same msg_id")
	write("", "no msg_id")
	write("", "no msg_id")
	write("K2", "other msg_id")
	if got := duplicates(); got != 1 {
		t.Fatalf("nr_bridge_duplicates_total = %v, want 1 (one second publish of msg_id K1)", got)
	}
	_, js := testclient.ConnectNATS(t, ns.URL())
	s, err := js.Stream(ctx, "NR_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 4 {
		t.Fatalf("NR_EVENTS holds %d messages, want 4 (K1 once, two without msg_id, K2)", info.State.Msgs)
	}
}
