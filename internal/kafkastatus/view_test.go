package kafkastatus_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/kafkastatus"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	"github.com/nr-bridge/nr-bridge/internal/tracker"
	kafkasink "github.com/nr-bridge/nr-bridge/sinks/kafka"
)

// nodeStatus is the accepted status of a command to acme's node n1 (or
// org's), accepted at the given time.
func nodeStatus(org, id string, accepted time.Time) *bridge.CommandStatus {
	s := status(id)
	s.Org, s.Broadcast, s.Node, s.Topic = org, false, "n1", "org/"+org+"/node/n1/cmd"
	s.AcceptedAt = accepted.UTC()
	return s
}

// repliedMetrics counts the replied commands the tracker reports.
type repliedMetrics struct {
	bridge.NopMetrics
	replied chan struct{}
}

func (m *repliedMetrics) CommandCompleted(status string) {
	if status == bridge.StatusReplied {
		m.replied <- struct{}{}
	}
}

// held sorts ids into those st holds and those it evicted; anything else
// fails the test.
func held(t *testing.T, st *kafkastatus.Store, org string, ids []string) (kept, evicted []string) {
	t.Helper()
	for _, id := range ids {
		_, _, err := st.Get(context.Background(), org, id)
		switch {
		case err == nil:
			kept = append(kept, id)
		case errors.Is(err, bridge.ErrStatusEvicted):
			evicted = append(evicted, id)
		default:
			t.Fatalf("get %s/%s: %v, want a status or ErrStatusEvicted", org, id, err)
		}
	}
	return kept, evicted
}

func ids(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s-%03d", prefix, i))
	}
	return out
}

// TestViewKeepsNewestPerOrgAcrossRestart writes 250 commands of acme and
// then 220 newer ones of evil, in shuffled order, with a limit of 200 per
// org: a replica running throughout and one started afterwards (rebuilt
// from the topic, read partition by partition) hold the same newest 200
// of each org, evil's flood evicts none of acme's, and the evicted ones
// answer ErrStatusEvicted. Then 40 replies reach the restarted replica's
// tracker, 20 to commands it evicted: all 40 are recorded, and a replica
// holding every command sees all of them replied.
func TestViewKeepsNewestPerOrgAcrossRestart(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	c := conn(t, k)
	limited := defaultCfg
	limited.MaxCommands = 200
	all := open(t, c, defaultCfg) // holds up to 1000 per org
	live := open(t, c, limited)
	ctx := context.Background()

	base := time.Now().Add(-time.Minute)
	var sts []*bridge.CommandStatus
	for i := range 250 {
		sts = append(sts, nodeStatus("acme", fmt.Sprintf("c-%03d", i), base.Add(time.Duration(i)*time.Millisecond)))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(sts), func(i, j int) { sts[i], sts[j] = sts[j], sts[i] })
	var evil []*bridge.CommandStatus
	for i := range 220 {
		evil = append(evil, nodeStatus("evil", fmt.Sprintf("e-%03d", i), base.Add(time.Second+time.Duration(i)*time.Millisecond)))
	}
	rng.Shuffle(len(evil), func(i, j int) { evil[i], evil[j] = evil[j], evil[i] })
	for _, s := range append(sts, evil...) {
		if _, err := all.Put(ctx, s, 0); err != nil {
			t.Fatal(err)
		}
	}
	testserver.WaitFor(t, 10*time.Second, "the live replica read every command", func() bool {
		_, _, err := live.Get(ctx, "evil", evil[len(evil)-1].CorrelationID)
		_, _, err2 := live.Get(ctx, "acme", sts[len(sts)-1].CorrelationID)
		return (err == nil || errors.Is(err, bridge.ErrStatusEvicted)) && (err2 == nil || errors.Is(err2, bridge.ErrStatusEvicted))
	})
	restarted := open(t, c, limited)

	for name, st := range map[string]*kafkastatus.Store{"live": live, "restarted": restarted} {
		kept, evicted := held(t, st, "acme", ids("c", 0, 250))
		if fmt.Sprint(kept) != fmt.Sprint(ids("c", 50, 250)) || fmt.Sprint(evicted) != fmt.Sprint(ids("c", 0, 50)) {
			t.Errorf("%s replica holds %d of acme's commands (%v...), evicted %d; want the newest 200, c-050 to c-249", name, len(kept), kept[:min(3, len(kept))], len(evicted))
		}
		kept, evicted = held(t, st, "evil", ids("e", 0, 220))
		if fmt.Sprint(kept) != fmt.Sprint(ids("e", 20, 220)) || len(evicted) != 20 {
			t.Errorf("%s replica holds %d of evil's commands, evicted %d; want e-020 to e-219", name, len(kept), len(evicted))
		}
	}
	if _, _, err := restarted.Get(ctx, "acme", "never-sent"); !errors.Is(err, bridge.ErrStatusNotFound) || errors.Is(err, bridge.ErrStatusEvicted) {
		t.Errorf("never sent: %v, want ErrStatusNotFound only", err)
	}

	// Replies through the restarted replica's tracker, as its workers
	// would hand them over after the backbone stored them.
	log := bridgetest.Logger()
	sink, err := kafkasink.New(c, kafkasink.Config{Window: 64}, log)
	if err == nil {
		err = sink.Start(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close(context.Background())
	m := &repliedMetrics{replied: make(chan struct{}, 100)}
	tr := tracker.New(tracker.Config{Grace: time.Hour}, log, m)
	if err := tr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer tr.Close(context.Background())
	tr.Attach(restarted)
	w := tr.WrapSink(sink)
	replied := append(ids("c", 0, 20), ids("c", 230, 250)...)
	written := make(chan error, len(replied))
	for _, id := range replied {
		msg := bridge.NewMessage("org/acme/node/n1/reply", fmt.Appendf(nil, `{"answer_to":%q}`, id), time.Now(), "application/json", []byte(id), nil)
		w.Write(ctx, msg, func(err error) { written <- err })
	}
	for range replied {
		if err := <-written; err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range replied {
		testserver.WaitFor(t, 10*time.Second, id+" replied on the replica holding everything", func() bool {
			s, _, err := all.Get(ctx, "acme", id)
			return err == nil && len(s.Replies) == 1
		})
		s, _, _ := all.Get(ctx, "acme", id)
		s.Refresh(time.Now())
		if s.Status != bridge.StatusReplied || string(s.Replies[0].Payload) != fmt.Sprintf(`{"answer_to":%q}`, id) || s.Replies[0].Node != "n1" {
			t.Fatalf("%s: %+v", id, s)
		}
	}
	for _, id := range ids("c", 230, 250) {
		for name, st := range map[string]*kafkastatus.Store{"live": live, "restarted": restarted} {
			testserver.WaitFor(t, 5*time.Second, id+" replied on "+name, func() bool {
				s, _, err := st.Get(ctx, "acme", id)
				return err == nil && len(s.Replies) == 1
			})
		}
	}
	testserver.WaitFor(t, 5*time.Second, "40 replied commands counted", func() bool { return len(m.replied) == 40 })

	// RecordReply itself: a node that is not the target, a command never
	// sent, a command the view holds.
	if rec, first, err := restarted.RecordReply(ctx, "acme", "c-001", bridge.NewReply("n2", nil, "", time.Now())); rec || first || err != nil {
		t.Errorf("reply from another node to an evicted command: recorded %v first %v %v, want neither", rec, first, err)
	}
	if rec, _, err := restarted.RecordReply(ctx, "acme", "c-001", bridge.NewReply("n1", nil, "", time.Now())); !rec || err != nil {
		t.Errorf("second reply from n1 to an evicted command: recorded %v %v, want recorded (already)", rec, err)
	}
	if rec, _, err := restarted.RecordReply(ctx, "acme", "never-sent", bridge.NewReply("n1", nil, "", time.Now())); rec || err != nil {
		t.Errorf("reply to a command never sent: recorded %v %v", rec, err)
	}
	if _, _, err := restarted.RecordReply(ctx, "acme", "c-249", bridge.NewReply("n1", nil, "", time.Now())); !errors.Is(err, bridge.ErrStatusConflict) {
		t.Errorf("reply to a held command: %v, want ErrStatusConflict", err)
	}
	s, _, _ := all.Get(ctx, "acme", "c-001")
	if len(s.Replies) != 1 || s.Replies[0].Node != "n1" {
		t.Errorf("c-001 after the extra replies: %+v", s.Replies)
	}

	// A third replica started now rebuilds the same view, replies
	// included.
	again := open(t, c, limited)
	kept, _ := held(t, again, "acme", ids("c", 0, 250))
	if fmt.Sprint(kept) != fmt.Sprint(ids("c", 50, 250)) {
		t.Errorf("rebuilt again: holds %d of acme's, want c-050 to c-249", len(kept))
	}
	for _, id := range ids("c", 230, 250) {
		if s, _, err := again.Get(ctx, "acme", id); err != nil || len(s.Replies) != 1 {
			t.Errorf("rebuilt again: %s %+v %v, want replied", id, s, err)
		}
	}
}

// TestViewBytesFairShare: over KAFKA_STATUS_MAX_BYTES the org holding the
// most bytes loses its oldest commands; a small org keeps its own.
func TestViewBytesFairShare(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	cfg := defaultCfg
	cfg.MaxBytes = 1 << 20
	st := open(t, conn(t, k), cfg)
	ctx := context.Background()
	base := time.Now().Add(-time.Minute)
	if _, err := st.Put(ctx, nodeStatus("acme", "mine", base), 0); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 8<<10)
	for i := range 300 { // about 2.5 MiB of records
		s := nodeStatus("evil", fmt.Sprintf("e-%03d", i), base.Add(time.Second+time.Duration(i)*time.Millisecond))
		s.Type = big
		if _, err := st.Put(ctx, s, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := st.Get(ctx, "acme", "mine"); err != nil {
		t.Fatalf("acme's command after evil's flood: %v", err)
	}
	kept, evicted := held(t, st, "evil", ids("e", 0, 300))
	if len(kept) == 0 || len(evicted) == 0 || kept[0] <= evicted[len(evicted)-1] {
		t.Fatalf("evil keeps %d, evicted %d: want its newest kept", len(kept), len(evicted))
	}
}

// TestRecordsFitTheTopic: with KAFKA_MAX_MESSAGE_BYTES at its minimum
// (32 KiB), a 40 KiB reply is recorded without its payload (truncated)
// instead of failing the write.
func TestRecordsFitTheTopic(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	c := bridgetest.KafkaConfig(t, k.Brokers(), map[string]string{"KAFKA_MAX_MESSAGE_BYTES": "32768"})
	st := open(t, c, defaultCfg)
	ctx := context.Background()
	s := status("big")
	rev, err := st.Put(ctx, s, 0)
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte(`{"data":"` + strings.Repeat("x", 40<<10) + `"}`)
	s.AddReply(bridge.NewReply("n1", payload, "application/json", time.Now()))
	s.AddReply(bridge.NewReply("n2", []byte(`{"small":true}`), "application/json", time.Now()))
	if _, err := st.Put(ctx, s, rev); err != nil {
		t.Fatalf("put a reply over the topic's limit: %v", err)
	}
	got, _, err := st.Get(ctx, "acme", "big")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Replies) != 2 || !got.Replies[0].Truncated || got.Replies[0].Payload != nil || got.Replies[0].Size != len(payload) ||
		string(got.Replies[1].Payload) != `{"small":true}` {
		t.Fatalf("replies %+v, want n1's truncated and n2's kept", got.Replies)
	}
}

// TestNestedReplyRecords: a reply nesting 10,000 arrays, then an honest
// one, on one broadcast: both recorded and readable, also by a replica
// rebuilt from the topic; a record an older version wrote with a payload
// nested 9,999 deep is read with that payload cut (truncated).
func TestNestedReplyRecords(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	c := conn(t, k)
	st := open(t, c, defaultCfg)
	ctx := context.Background()
	s := status("deep")
	rev, err := st.Put(ctx, s, 0)
	if err != nil {
		t.Fatal(err)
	}
	deep := []byte(strings.Repeat("[", 10_000) + strings.Repeat("]", 10_000))
	s.AddReply(bridge.NewReply("evil", deep, "application/json", time.Now()))
	if rev, err = st.Put(ctx, s, rev); err != nil {
		t.Fatalf("put the nested reply: %v", err)
	}
	got, grev, err := st.Get(ctx, "acme", "deep")
	if err != nil || grev != rev || len(got.Replies) != 1 || got.Replies[0].PayloadBase64 == "" || got.Replies[0].Payload != nil {
		t.Fatalf("after the nested reply: %+v %v", got, err)
	}
	got.AddReply(bridge.NewReply("n1", []byte(`{"ok":true}`), "application/json", time.Now()))
	if _, err := st.Put(ctx, got, grev); err != nil {
		t.Fatalf("put the honest reply: %v", err)
	}

	// An older version's record: the payload kept as JSON.
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.DefaultProduceTopic("nr.command-status"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	old := fmt.Sprintf(`{"kind":"reply","org":"acme","correlation_id":"deep","issued_at":%q,"reply":{"node":"old","received_at":%q,"size":19998,"payload":%s}}`,
		s.IssuedAt.Format(time.RFC3339Nano), time.Now().UTC().Format(time.RFC3339Nano), deep[1:len(deep)-1])
	if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(bridge.StatusKey("acme", "deep") + ".old"), Value: []byte(old)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*kafkastatus.Store{"running": st, "rebuilt": open(t, c, defaultCfg)} {
		testserver.WaitFor(t, 10*time.Second, name+": 3 replies", func() bool {
			got, _, err := r.Get(ctx, "acme", "deep")
			return err == nil && len(got.Replies) == 3
		})
		got, _, _ := r.Get(ctx, "acme", "deep")
		byNode := map[string]bridge.Reply{}
		for _, rp := range got.Replies {
			byNode[rp.Node] = rp
		}
		if string(byNode["n1"].Payload) != `{"ok":true}` || byNode["evil"].PayloadBase64 == "" || !byNode["old"].Truncated || byNode["old"].Payload != nil || byNode["old"].Size != 19998 {
			t.Fatalf("%s: replies %+v", name, got.Replies)
		}
	}
}
