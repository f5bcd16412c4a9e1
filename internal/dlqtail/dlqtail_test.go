package dlqtail

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

func TestReasonOf(t *testing.T) {
	for _, tc := range []struct{ label, want string }{
		{bridge.ReasonInvalidID, bridge.ReasonInvalidID},
		{bridge.ReasonPoison, bridge.ReasonPoison},
		{"", bridge.ReasonOther},
		{"made-up", bridge.ReasonOther},
	} {
		if got := reasonOf(tc.label); got != tc.want {
			t.Errorf("reasonOf(%q) = %s, want %s", tc.label, got, tc.want)
		}
	}
}

// deadLetters are what the tests write, oldest first: the headers the
// bridge writes (bridge.Message.AppendHeaders with Nr-Reason and Nr-Error) and the payload.
func deadLetters() []*bridge.Message {
	at := time.Now()
	bad := bridge.NewMessage("org/acme/node/bad.node/events", []byte("0123456789"), at, "", nil, nil)
	other := bridge.NewMessage("org/other/node/n$/events", []byte("x"), at, "", nil, nil)
	noOrg := bridge.NewMessage("org/bad.org/node/n1/events", []byte("xy"), at, "", nil, nil)
	poison := bridge.NewMessage("org/acme/node/n2/reply", []byte(strings.Repeat("p", 300)), at, "", nil, nil)
	poison.DeadLetter = bridge.ReasonLine(fmt.Errorf("%w (3 attempts; last error: boom)", bridge.ErrPoison))
	poison.Reason = bridge.ReasonPoison
	return []*bridge.Message{bad, other, noOrg, poison}
}

func checkAcme(t *testing.T, got []Entry, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("acme: %d dead letters, want 2: %+v", len(got), got)
	}
	p, b := got[0], got[1]
	if p.Reason != bridge.ReasonPoison || p.Origin != "org/acme/node/n2/reply" || p.Kind != "reply" || p.Size != 300 || p.Node != "n2" || p.Time.IsZero() {
		t.Errorf("newest: %+v, want the poison reply of 300 bytes", p)
	}
	if b.Reason != bridge.ReasonInvalidID || b.Origin != "org/acme/node/bad.node/events" || b.Node != "" || b.Size != 10 || b.Org != "acme" {
		t.Errorf("oldest: %+v, want the invalid_id event of 10 bytes", b)
	}
}

func TestRecentNATS(t *testing.T) {
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	nc, js := testclient.ConnectNATS(t, ns.URL())
	defer nc.Close()
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "NR_DLQ", Subjects: []string{"nr.dlq.>"}}); err != nil {
		t.Fatal(err)
	}
	r := NewNATS(js, "NR_DLQ", "nr")
	if got, err := r.Recent(ctx, "acme", 10); err != nil || len(got) != 0 {
		t.Fatalf("empty stream: %v %v", got, err)
	}
	for _, m := range deadLetters() {
		msg := nats.NewMsg("nr.dlq." + string(m.Kind))
		for _, h := range m.AppendHeaders(nil) {
			msg.Header.Add(h.Name, h.Value)
		}
		msg.Data = m.Payload
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	cmd := nats.NewMsg("nr.dlq.cmd")
	cmd.Header.Set(bridge.HeaderError, "not a JSON object: x")
	cmd.Header.Set(bridge.HeaderReason, bridge.ReasonMalformed)
	cmd.Header.Set(bridge.HeaderSubject, "nr.org.acme.node.n9.cmd")
	cmd.Data = []byte("not json")
	if _, err := js.PublishMsg(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	got, err := r.Recent(ctx, "acme", 10)
	if err != nil || len(got) != 3 || got[0].Reason != bridge.ReasonMalformed || got[0].Kind != "command" || got[0].Node != "n9" || got[0].Size != 8 {
		t.Fatalf("acme with a command dead letter: %+v %v", got, err)
	}
	checkAcme(t, got[1:], nil)
	if got, err := r.Recent(ctx, "acme", 1); err != nil || len(got) != 1 || got[0].Kind != "command" {
		t.Errorf("limit 1: %+v %v", got, err)
	}
	if got, err := r.Recent(ctx, "other", 10); err != nil || len(got) != 1 || got[0].Org != "other" || got[0].Node != "" {
		t.Errorf("other (its node ID invalid, its org valid): %+v %v", got, err)
	}
	if got, err := r.Recent(ctx, "bad", 10); err != nil || len(got) != 0 {
		t.Errorf("bad (of org/bad.org/...): %+v %v", got, err)
	}
	r.scan = 2 // only the newest two: the command and the poison reply
	if got, _ := r.Recent(ctx, "acme", 10); len(got) != 2 {
		t.Errorf("scan 2: %d entries, want 2", len(got))
	}
}

func TestRecentKafka(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{SeedTopics: []string{"nr.dlq"}, Partitions: 3})
	var c kafkaconn.Config
	if err := env.ParseWithOptions(&c, env.Options{Environment: map[string]string{"KAFKA_BROKERS": strings.Join(k.Brokers(), ",")}}); err != nil {
		t.Fatal(err)
	}
	r := NewKafka(c, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	if got, err := r.Recent(ctx, "acme", 10); err != nil || len(got) != 0 {
		t.Fatalf("empty topic: %v %v", got, err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i, m := range deadLetters() {
		rec := &kgo.Record{Topic: "nr.dlq", Key: []byte(m.Topic), Value: m.Payload, Timestamp: time.Now().Add(time.Duration(i) * time.Millisecond)}
		for _, h := range m.AppendHeaders(nil) {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.Name, Value: []byte(h.Value)})
		}
		if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	got, err := r.Recent(ctx, "acme", 10)
	checkAcme(t, got, err)
	if got, err := r.Recent(ctx, "other", 10); err != nil || len(got) != 1 || got[0].Org != "other" {
		t.Errorf("other: %+v %v", got, err)
	}
}
