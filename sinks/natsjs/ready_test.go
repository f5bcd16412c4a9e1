package natsjs_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/bridgetest"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// returnsWithin reports whether f returns within d.
func returnsWithin(d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// TestReadyDoesNotBlockOnSlowConnection: nats.go holds the connection's
// lock while a write to the server blocks (a slow or congested link), so
// reading the connection status there blocks too, up to its one-minute
// flusher timeout. Ready backs /readyz and nr_bridge_backbone_connected; it
// must answer at once even then (found by the fault suite's slow-backbone
// scenario, where GET /metrics timed out).
func TestReadyDoesNotBlockOnSlowConnection(t *testing.T) {
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	proxy := testserver.StartStallProxy(t, fmt.Sprintf("127.0.0.1:%d", ns.Port()))
	log := slog.New(slog.DiscardHandler)
	nc, err := natsconn.Connect(natsconn.Config{URL: "nats://" + proxy.Addr()}, "t", log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := config()
	cfg.PublishWindow, cfg.AckTimeout = 4096, time.Minute
	sink, err := bridgetest.StartNATSSink(ctx, nc, cfg, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Ready(); err != nil {
		t.Fatalf("Ready before the stall: %v", err)
	}

	proxy.SetStalled(true)
	var written sync.WaitGroup
	payload := make([]byte, 64<<10)
	go func() {
		for i := 0; i < 1000 && ctx.Err() == nil; i++ {
			written.Add(1)
			m := bridge.NewMessage(fmt.Sprintf("org/o1/node/n%d/events", i%10), payload, time.Now(), "", nil, nil)
			sink.Write(ctx, m, func(error) { written.Done() })
		}
	}()
	// Wait until a write holds the connection's lock.
	deadline := time.Now().Add(15 * time.Second)
	for returnsWithin(300*time.Millisecond, func() { nc.Status() }) {
		if time.Now().After(deadline) {
			t.Fatal("the connection's writes never blocked; the test cannot show the problem")
		}
	}
	if !returnsWithin(time.Second, func() { _ = sink.Ready() }) {
		t.Errorf("Ready blocked while a write to the server was stuck")
	}
	proxy.SetStalled(false)
	written.Wait()
	if err := sink.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
