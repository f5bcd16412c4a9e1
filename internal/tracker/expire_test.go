package tracker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/natsstatus"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	"github.com/nr-bridge/nr-bridge/internal/tracker"
	"go.uber.org/goleak"
)

// countingMetrics records what the tracker counts.
type countingMetrics struct {
	bridge.NopMetrics
	completed chan string
}

func (m *countingMetrics) CommandCompleted(status string) { m.completed <- status }

// TestTrackerExpiresAndStops arms the expiry of a short command through
// CommandAccepted on a real JetStream bucket: it is recorded expired and
// counted once, a Wait ends with it, and Close leaves no goroutine behind.
func TestTrackerExpiresAndStops(t *testing.T) {
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	nc, js := testclient.ConnectNATS(t, ns.URL())
	ctx := context.Background()
	store, err := natsstatus.New(ctx, js, natsstatus.Config{Bucket: "NR_COMMAND_STATUS"}, natsstatus.Options{Manage: true, Replicas: 1, TTL: time.Hour}, bridgetest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	leaks := goleak.IgnoreCurrent()

	m := &countingMetrics{completed: make(chan string, 4)}
	tr := tracker.New(tracker.Config{Grace: time.Hour}, bridgetest.Logger(), m)
	if err := tr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Get(ctx, "acme", "x"); err != bridge.ErrStatusUnavailable {
		t.Fatalf("Get before Attach: %v, want ErrStatusUnavailable", err)
	}
	tr.Attach(store)
	now := time.Now()
	cmd, err := bridge.ParseCommand(fmt.Appendf(nil, `{"type":"t","version":1,"correlation_id":"short","issued_at":%d,"ttl_sec":1,"payload":{}}`, now.Unix()), now, bridge.CommandLimits{})
	if err != nil {
		t.Fatal(err)
	}
	target := bridge.Target{Org: "acme", Node: "n1"}
	tr.CommandAccepted(target, cmd, bridge.SourceStream)
	tr.CommandPublished(target, cmd, bridge.SourceStream, bridge.PublishResult{Topic: target.MQTTTopic(), ReasonCode: 0x10})

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := tr.Wait(wctx, "acme", "short")
	if err != nil || s.Status != bridge.StatusExpired || wctx.Err() != nil {
		t.Fatalf("Wait: %+v %v, want expired before the wait ended", s, err)
	}
	if got := <-m.completed; got != bridge.StatusExpired {
		t.Fatalf("counted %q, want expired", got)
	}
	s, err = tr.Get(ctx, "acme", "short")
	if err != nil || s.ExpiredAt.IsZero() || !s.NoSubscribers || s.Source != bridge.SourceStream {
		t.Fatalf("Get: %+v %v", s, err)
	}
	if err := tr.Close(ctx); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	goleak.VerifyNone(t, leaks)
	// Positive control for the negative check: no goroutine of the tracker
	// is left (goleak above), so nothing can count after this point.
	select {
	case got := <-m.completed:
		t.Fatalf("counted %q again", got)
	default:
	}
}
