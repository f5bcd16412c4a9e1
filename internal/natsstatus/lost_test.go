package natsstatus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/natsstatus"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// A status bucket deleted under a running store (or lost with the
// server's store) is created again by the next write, which then
// succeeds; without NATS_MANAGE_STREAMS the write fails and says why.
func TestBucketLost(t *testing.T) {
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	nc, js := testclient.ConnectNATS(t, ns.URL())
	defer nc.Close()
	ctx := context.Background()
	managed, err := natsstatus.New(ctx, js, natsstatus.Config{Bucket: "NR_COMMAND_STATUS"}, natsstatus.Options{Manage: true, Replicas: 1, TTL: time.Hour}, bridgetest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	unmanaged, err := natsstatus.New(ctx, js, natsstatus.Config{Bucket: "NR_COMMAND_STATUS"}, natsstatus.Options{}, bridgetest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := managed.Put(ctx, status("before"), 0); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, "NR_COMMAND_STATUS"); err != nil {
		t.Fatal(err)
	}
	if _, err := unmanaged.Put(ctx, status("unmanaged"), 0); err == nil {
		t.Fatal("unmanaged store wrote to a deleted bucket")
	}
	if _, err := managed.Put(ctx, status("after"), 0); err != nil {
		t.Fatalf("put after the bucket was deleted: %v", err)
	}
	got, _, err := managed.Get(ctx, "acme", "after")
	if err != nil || got.CorrelationID != "after" {
		t.Fatalf("get after: %v %v", got, err)
	}
	if _, _, err := managed.Get(ctx, "acme", "before"); !errors.Is(err, bridge.ErrStatusNotFound) {
		t.Fatalf("get before = %v, want not found (lost with the bucket)", err)
	}
}
