package natsjs

import (
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/natsconn"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// BenchmarkNatsMsg measures building the JetStream message (subject and
// headers) of a typical nr-sim event: content type and msg_id.
func BenchmarkNatsMsg(b *testing.B) {
	s := &Sink{cfg: Config{Streams: natsconn.Streams{SubjectPrefix: "nr"}}}
	payload := make([]byte, 256)
	m := bridge.NewMessage("org/demo/node/n42/events", payload, time.Now(), "application/json", nil,
		[]bridge.Property{{Name: "msg_id", Value: "9db34b75.demo.n42.1"}})
	b.ReportAllocs()
	for b.Loop() {
		if msg := s.natsMsg(m); msg.Subject == "" {
			b.Fatal(msg)
		}
	}
}

// TestNatsMsgAllocations guards the header sizing in natsMsg: a typical
// event's header map must stay in Go's small-map layout (6 allocations; a
// hint above 8 made it 8 and 1,112 bytes).
func TestNatsMsgAllocations(t *testing.T) {
	s := &Sink{cfg: Config{Streams: natsconn.Streams{SubjectPrefix: "nr"}}}
	m := bridge.NewMessage("org/demo/node/n42/events", make([]byte, 256), time.Now(), "application/json", nil,
		[]bridge.Property{{Name: "msg_id", Value: "9db34b75.demo.n42.1"}})
	if got := testing.AllocsPerRun(200, func() { s.natsMsg(m) }); got > 6 {
		t.Fatalf("natsMsg: %.0f allocations per message, want at most 6", got)
	}
}

// TestNatsMsgDedupeID: natsMsg builds the subject and Nats-Msg-Id in one
// string; they must be what NodeTopic.Subject and Message.DedupeID say.
func TestNatsMsgDedupeID(t *testing.T) {
	s := &Sink{cfg: Config{Streams: natsconn.Streams{SubjectPrefix: "nr"}}}
	for _, topic := range []string{"org/tenantA/node/x/events", "org/b/node/v-1_2/reply"} {
		m := bridge.NewMessage(topic, nil, time.Now(), "", nil, []bridge.Property{{Name: "msg_id", Value: "K"}})
		msg := s.natsMsg(m)
		want := bridge.NodeTopic{Org: m.Org, Node: m.Node, Kind: m.Kind}.Subject("nr")
		if msg.Subject != want || msg.Header.Get(HeaderMsgID) != m.DedupeID() || len(msg.Header[HeaderMsgID]) != 1 {
			t.Errorf("%s: subject %q Nats-Msg-Id %v, want %q and %q", topic, msg.Subject, msg.Header[HeaderMsgID], want, m.DedupeID())
		}
	}
	m := bridge.NewMessage("org/a/node/n/events", nil, time.Now(), "", nil, nil)
	if msg := s.natsMsg(m); msg.Subject != "nr.org.a.node.n.events" || msg.Header[HeaderMsgID] != nil {
		t.Errorf("without msg_id: subject %q headers %v", msg.Subject, msg.Header)
	}
}
