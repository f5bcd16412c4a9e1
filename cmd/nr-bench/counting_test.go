package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// The synthetic run used by every counting test: nr-sim saw ten events
// acked; the stream holds nine of them (seq 5 missing) and seq 7 twice.
const (
	synthAcked   = 10
	synthMissing = 5
	synthTwice   = 7
)

func synthID(seq int) string { return fmt.Sprintf("run1.demo.n1.%d", seq) }

// synthDedupeID is the bridge's scoped backbone ID of synthID(seq).
func synthDedupeID(seq int) string { return "demo/n1/" + synthID(seq) }

func synthPayload(seq int) []byte {
	return []byte(fmt.Sprintf(`{"seq":%d,"ts":%d,"pad":"x"}`, seq, time.Now().UnixNano()))
}

// synthStream returns the sequence numbers in the order they are written.
func synthStream() []int {
	var seqs []int
	for seq := 1; seq <= synthAcked; seq++ {
		if seq != synthMissing {
			seqs = append(seqs, seq)
		}
	}
	return append(seqs, synthTwice)
}

func assertTally(t *testing.T, c *consumer) {
	t.Helper()
	received, lost, dup := c.tally(synthAcked)
	if received != synthAcked-1 || lost != 1 || dup != 1 {
		t.Fatalf("tally(%d) = received %d lost %d dup %d, want received %d lost 1 dup 1",
			synthAcked, received, lost, dup, synthAcked-1)
	}
}

// The counting itself: one missing and one duplicated msg_id give exactly
// lost 1 and dup 1, and scoped dedupe IDs count as their msg_id.
func TestTallyKnownLossAndDuplicate(t *testing.T) {
	c := newConsumer(func() {})
	for _, seq := range synthStream() {
		c.add(synthID(seq), synthPayload(seq))
	}
	assertTally(t, c)

	// More arrivals than acks (a redelivery nr-sim counted once) is dup,
	// never a negative loss.
	if received, lost, dup := c.tally(synthAcked - 2); received != 9 || lost != 0 || dup != 1 {
		t.Fatalf("tally(8) = %d %d %d, want received 9 lost 0 dup 1", received, lost, dup)
	}
	// Nothing arrived: everything acked is lost.
	if received, lost, dup := newConsumer(func() {}).tally(synthAcked); received != 0 || lost != synthAcked || dup != 0 {
		t.Fatalf("empty tally = %d %d %d, want 0 %d 0", received, lost, dup, synthAcked)
	}
}

// Latency percentiles pick the nearest-rank sample, and only arrivals
// while recording (with a ts field) count.
func TestPercentiles(t *testing.T) {
	var l []time.Duration
	for i := 1000; i >= 1; i-- {
		l = append(l, time.Duration(i)*time.Millisecond)
	}
	p50, p99, p999, n := pcts(l)
	if p50 != 501*time.Millisecond || p99 != 991*time.Millisecond || p999 != 1000*time.Millisecond || n != 1000 {
		t.Fatalf("pcts = %v %v %v %d, want 501ms 991ms 1s 1000", p50, p99, p999, n)
	}
	c := newConsumer(func() {})
	c.add("a", synthPayload(1)) // not recording
	c.record(true)
	c.add("b", synthPayload(2))
	c.add("c", []byte(`{"no":"ts"}`))
	c.record(false)
	if _, _, _, n := c.percentiles(); n != 1 {
		t.Fatalf("%d latency samples, want 1 (the one recorded with a ts)", n)
	}
}

// The JetStream consumer nr-bench reads NR_EVENTS with reports a known
// loss and a known duplicate. JetStream drops a second copy with the same
// Nats-Msg-Id inside its duplicate window, so the stream's window is short
// and the copy is published again until JetStream stores it (its PubAck
// not marked duplicate), as a redelivery after the window would be.
func TestJetStreamConsumerCountsLossAndDuplicate(t *testing.T) {
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "NR_EVENTS", Subjects: []string{"nr.events.>"}, Duplicates: 100 * time.Millisecond,
	}); err != nil {
		t.Fatal(err)
	}
	stored := 0
	for i, seq := range synthStream() {
		for {
			msg := &nats.Msg{Subject: "nr.events.demo.n1", Data: synthPayload(seq), Header: nats.Header{}}
			msg.Header.Set(jetstream.MsgIDHeader, synthDedupeID(seq))
			ack, err := js.PublishMsg(ctx, msg)
			if err != nil {
				t.Fatal(err)
			}
			if !ack.Duplicate {
				stored++
				break
			}
			if i < len(synthStream())-1 {
				t.Fatalf("seq %d: first copy reported duplicate", seq)
			}
			time.Sleep(20 * time.Millisecond) // the window has not passed yet; the next PubAck says when it has
		}
	}
	if stored != synthAcked {
		t.Fatalf("stored %d messages, want %d", stored, synthAcked)
	}

	c, err := startConsumer(ctx, ns.URL(), "NR_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	testserver.WaitFor(t, 10*time.Second, "every stored message read", func() bool {
		n, _, _, _ := c.snapshot()
		return n == synthAcked
	})
	assertTally(t, c)
}

// The Kafka consumer (nr-bridge-kafka target) reports a known loss and a
// known duplicate from the Nr-Msg-Id header; kfake keeps both copies.
func TestKafkaConsumerCountsLossAndDuplicate(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{SeedTopics: []string{"nr.events"}, Partitions: 3})
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.DefaultProduceTopic("nr.events"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, seq := range synthStream() {
		r := &kgo.Record{Key: []byte("demo/n1"), Value: synthPayload(seq),
			Headers: []kgo.RecordHeader{{Key: "Nr-Msg-Id", Value: []byte(synthDedupeID(seq))}}}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	c, err := startKafkaConsumer(strings.Join(k.Brokers(), ","), "nr.events")
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	testserver.WaitFor(t, 10*time.Second, "every produced record read", func() bool {
		n, _, _, _ := c.snapshot()
		return n == synthAcked
	})
	assertTally(t, c)
}

// results.json carries the date, the machine, the versions, the command
// line and every scenario's figures, with the same numbers the run printed.
func TestWriteReport(t *testing.T) {
	dir := t.TempDir()
	o := options{duration: 2 * time.Second, warmup: time.Second, bridgeEnv: []string{"MQTT_WORKERS=4"}}
	args := []string{"nr-bench", "-duration", "2s", "-scenarios", "saturation"}
	rep := newReport(args, o, versions{NRBridge: "abc1234", Go: "go version go1.x", NATSServer: "v2", Mosquitto: "mosquitto 2", Paho: "v0.x"})
	rep.Scenarios = []result{
		{Scenario: "saturation", Target: "nr-bridge", MsgPerSec: 1234.5, P99: 3 * time.Millisecond,
			Acked: 10, Received: 9, Lost: 1, Dup: 1, PeakRSS: 50 << 20},
		{Scenario: "saturation", Target: "baseline", Error: "no event reached NR_EVENTS"},
	}
	path, err := writeReport(dir, rep)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Date        time.Time      `json:"date"`
		CommandLine []string       `json:"command_line"`
		Machine     map[string]any `json:"machine"`
		Versions    map[string]any `json:"versions"`
		Window      string         `json:"window"`
		Warmup      string         `json:"warmup"`
		BridgeEnv   []string       `json:"bridge_env"`
		Units       string         `json:"units"`
		Scenarios   []map[string]any
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("results.json: %v\n%s", err, b)
	}
	if time.Since(got.Date) > time.Minute || got.Date.Location() != time.UTC {
		t.Errorf("date %v, want now in UTC", got.Date)
	}
	if strings.Join(got.CommandLine, " ") != strings.Join(args, " ") {
		t.Errorf("command_line %q, want %q", got.CommandLine, args)
	}
	if got.Machine["nproc"] != float64(runtime.NumCPU()) {
		t.Errorf("machine.nproc %v, want %d", got.Machine["nproc"], runtime.NumCPU())
	}
	if mem, _ := got.Machine["mem_total_bytes"].(float64); runtime.GOOS == "linux" && mem < 1<<20 {
		t.Errorf("machine.mem_total_bytes %v, want the host's memory", got.Machine["mem_total_bytes"])
	}
	for _, k := range []string{"nr_bridge", "go", "nats_server", "mosquitto", "paho_golang_baseline"} {
		if s, _ := got.Versions[k].(string); s == "" {
			t.Errorf("versions.%s missing", k)
		}
	}
	if got.Window != "2s" || got.Warmup != "1s" || len(got.BridgeEnv) != 1 || got.Units == "" {
		t.Errorf("window %q warmup %q bridge_env %q units %q", got.Window, got.Warmup, got.BridgeEnv, got.Units)
	}
	if len(got.Scenarios) != 2 {
		t.Fatalf("%d scenarios, want 2", len(got.Scenarios))
	}
	s := got.Scenarios[0]
	for k, want := range map[string]float64{"MsgPerSec": 1234.5, "P99": 3e6, "Acked": 10, "Received": 9, "Lost": 1, "Dup": 1, "PeakRSS": 50 << 20} {
		if s[k] != want {
			t.Errorf("scenarios[0].%s = %v, want %v", k, s[k], want)
		}
	}
	if _, ok := s["Error"]; ok {
		t.Errorf("scenarios[0] has an Error")
	}
	if got.Scenarios[1]["Error"] != "no event reached NR_EVENTS" {
		t.Errorf("scenarios[1].Error = %v, want the failure", got.Scenarios[1]["Error"])
	}
}

func TestMemTotal(t *testing.T) {
	in := []byte("MemTotal:       16314564 kB\nMemFree:         1234 kB\n")
	if got := memTotal(in); got != 16314564*1024 {
		t.Fatalf("memTotal = %d, want %d", got, 16314564*1024)
	}
	if got := memTotal([]byte("MemFree: 1 kB\n")); got != 0 {
		t.Fatalf("memTotal without MemTotal = %d, want 0", got)
	}
}
