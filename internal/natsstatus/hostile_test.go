package natsstatus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/natsstatus"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// nested is a JSON document of depth arrays inside each other: valid for
// encoding/json (its limit is 10,000 levels) until a status document
// wraps it in three more levels.
func nested(depth int) []byte {
	return []byte(strings.Repeat("[", depth) + strings.Repeat("]", depth))
}

// TestNestedReplyKeepsStatusReadable stores a broadcast's reply that nests
// 10,000 arrays, then an honest one: the status stays readable, the
// hostile payload is kept as base64, the honest one as JSON.
func TestNestedReplyKeepsStatusReadable(t *testing.T) {
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	nc, js := testclient.ConnectNATS(t, ns.URL())
	defer nc.Close()
	ctx := context.Background()
	st, err := natsstatus.New(ctx, js, natsstatus.Config{Bucket: "NR_COMMAND_STATUS"}, natsstatus.Options{Manage: true, Replicas: 1, TTL: time.Hour}, bridgetest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	s := status("deep")
	s.Node, s.Broadcast = "", true
	rev, err := st.Put(ctx, s, 0)
	if err != nil {
		t.Fatal(err)
	}
	hostile := nested(10_000)
	s.AddReply(bridge.NewReply("evil", hostile, "application/json", time.Now()))
	if rev, err = st.Put(ctx, s, rev); err != nil {
		t.Fatalf("put the nested reply: %v", err)
	}
	got, grev, err := st.Get(ctx, "acme", "deep")
	if err != nil {
		t.Fatalf("get after the nested reply: %v", err)
	}
	if grev != rev || len(got.Replies) != 1 || got.Replies[0].Payload != nil || got.Replies[0].Size != 20_000 ||
		got.Replies[0].PayloadBase64 == "" {
		t.Fatalf("nested reply kept as %+v (rev %d, put %d), want base64", got.Replies, grev, rev)
	}
	got.AddReply(bridge.NewReply("n1", []byte(`{"ok": true}`), "application/json", time.Now()))
	if _, err := st.Put(ctx, got, grev); err != nil {
		t.Fatalf("put the honest reply: %v", err)
	}
	got, _, err = st.Get(ctx, "acme", "deep")
	if err != nil || len(got.Replies) != 2 || string(got.Replies[1].Payload) != `{"ok":true}` {
		t.Fatalf("after the honest reply: %+v %v", got, err)
	}
}

// TestUndecodableStatusIsRepaired writes, as an older bridge did, a status
// whose reply payload nests 9,999 arrays (10,002 levels in the document):
// Get repairs it (that reply's payload cut, truncated set) instead of
// failing, and the next write replaces it.
func TestUndecodableStatusIsRepaired(t *testing.T) {
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	nc, js := testclient.ConnectNATS(t, ns.URL())
	defer nc.Close()
	ctx := context.Background()
	st, err := natsstatus.New(ctx, js, natsstatus.Config{Bucket: "NR_COMMAND_STATUS"}, natsstatus.Options{Manage: true, Replicas: 1, TTL: time.Hour}, bridgetest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, "NR_COMMAND_STATUS")
	if err != nil {
		t.Fatal(err)
	}
	doc := fmt.Sprintf(`{"org":"acme","correlation_id":"old","node":"n1","type":"reboot","topic":"org/acme/node/n1/cmd","source":"http","status":"replied",`+
		`"issued_at":"2026-12-03T07:00:00Z","expires_at":"2099-01-01T00:00:00Z","accepted_at":"2026-12-03T07:00:00Z",`+
		`"replies":[{"node":"n1","received_at":"2026-12-03T07:00:01Z","size":19998,"payload":%s}]}`, nested(9_999))
	rev, err := kv.Create(ctx, bridge.StatusKey("acme", "old"), []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	got, grev, err := st.Get(ctx, "acme", "old")
	if err != nil {
		t.Fatalf("get the old document: %v", err)
	}
	if grev != rev || len(got.Replies) != 1 || got.Replies[0].Payload != nil || !got.Replies[0].Truncated || got.Replies[0].Size != 19998 || got.Node != "n1" {
		t.Fatalf("repaired status %+v rev %d, want the reply truncated", got, grev)
	}
	if _, err := st.Put(ctx, got, grev); err != nil {
		t.Fatalf("rewrite: %v", err)
	}
	e, err := kv.Get(ctx, bridge.StatusKey("acme", "old"))
	if err != nil || strings.Contains(string(e.Value()), "[[") {
		t.Fatalf("rewritten document %.200s %v", e.Value(), err)
	}

	// A value that is not a status at all counts as absent: the next
	// create replaces it.
	if _, err := kv.Create(ctx, bridge.StatusKey("acme", "junk"), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	_, jrev, err := st.Get(ctx, "acme", "junk")
	if !errors.Is(err, bridge.ErrStatusNotFound) || jrev == 0 {
		t.Fatalf("get junk: rev %d %v, want ErrStatusNotFound with the revision", jrev, err)
	}
	if _, err := st.Put(ctx, status("junk"), jrev); err != nil {
		t.Fatalf("replace junk: %v", err)
	}
	if s, _, err := st.Get(ctx, "acme", "junk"); err != nil || s.Type != "reboot" {
		t.Fatalf("after replacing junk: %+v %v", s, err)
	}
}

// TestStatusFitsTheBucket: a reply too large for the bucket's largest
// value is kept with its payload cut (truncated), not lost.
func TestStatusFitsTheBucket(t *testing.T) {
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	nc, js := testclient.ConnectNATS(t, ns.URL())
	defer nc.Close()
	ctx := context.Background()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "SMALL", History: 1, MaxValueSize: 32 << 10}); err != nil {
		t.Fatal(err)
	}
	st, err := natsstatus.New(ctx, js, natsstatus.Config{Bucket: "SMALL"}, natsstatus.Options{}, bridgetest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	s := status("big")
	s.Node, s.Broadcast = "", true
	payload := []byte(`{"data":"` + strings.Repeat("x", 40<<10) + `"}`)
	s.AddReply(bridge.NewReply("n1", payload, "application/json", time.Now()))
	s.AddReply(bridge.NewReply("n2", []byte(`{"small":true}`), "application/json", time.Now()))
	if _, err := st.Put(ctx, s, 0); err != nil {
		t.Fatalf("put a status over the bucket's value size: %v", err)
	}
	got, _, err := st.Get(ctx, "acme", "big")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Replies) != 2 || !got.Replies[0].Truncated || got.Replies[0].Payload != nil || got.Replies[0].Size != len(payload) ||
		string(got.Replies[1].Payload) != `{"small":true}` || got.Replies[1].Truncated {
		t.Fatalf("stored replies %+v, want the large one truncated and the small one kept", got.Replies)
	}
}
