//go:build faults

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// result is one scenario's line.
type result struct {
	Name    string
	Sent    int
	Arrived int
	Lost    int
	// Duplicates are the extra copies of sent events stored in the
	// backbone, counted by the ID in their payload: what a reader sees
	// twice. On NATS an event with a msg_id is stored once however often
	// it is written, so these are events sent without one.
	Duplicates int
	// Deduplicated is what the scenario's bridges counted in
	// nr_bridge_duplicates_total: writes JetStream acknowledged as
	// duplicates of a stored msg_id (always 0 on Kafka). With Duplicates
	// it is what was written twice.
	Deduplicated int
	// Bound is the most the scenario allows written twice
	// (Duplicates+Deduplicated), and Why says where that bound comes from
	// ("exactly once" for 0). -1: not checked (set by checkDuplicates).
	Bound int
	Why   string
	Time  time.Duration
	Note  string
	// Printed is the line printed for a result of another shape (a
	// hostile case); "" means line().
	Printed string
}

func (r result) line() string {
	if r.Printed != "" {
		return r.Printed
	}
	s := fmt.Sprintf("scenario=%s sent=%d arrived=%d lost=%d duplicates=%d deduplicated=%d time=%s",
		r.Name, r.Sent, r.Arrived, r.Lost, r.Duplicates, r.Deduplicated, r.Time.Round(100*time.Millisecond))
	if r.Why != "" {
		s += fmt.Sprintf(" written-twice-bound=%d (%s)", r.Bound, r.Why)
	}
	if r.Note != "" {
		s += " note=" + fmt.Sprintf("%q", r.Note)
	}
	return s
}

// dedupeID is the ID a collector counts a stored event by: the "id" field
// of its payload (every load event carries one, with or without a msg_id
// property), else the msg_id from header (the backbone's dedupe header).
// Counting by payload is what catches an event written twice without a
// msg_id, which no backbone deduplicates.
func dedupeID(t testing.TB, payload []byte, header string) string {
	t.Helper()
	var doc struct {
		ID string `json:"id"`
	}
	msgID := bridge.MsgIDOf(header)
	if json.Unmarshal(payload, &doc) != nil || doc.ID == "" {
		return msgID
	}
	if msgID != "" && msgID != doc.ID {
		t.Errorf("event %q stored with msg_id %q (header %q)", doc.ID, msgID, header)
	}
	return doc.ID
}

// writtenTwiceBound is a scenario's bound on what it may find written
// twice, and why.
type writtenTwiceBound struct {
	Max int
	Why string
}

// exactlyOnce is the bound of a scenario whose fault gives no reason to
// write anything twice.
var exactlyOnce = writtenTwiceBound{0, "exactly once"}

// retriedBound allows what the bridge retried (nr_bridge_write_retries_total
// of bridges: a write whose ack was lost may have been stored) and what the
// agents published again after a publish that failed without an answer
// (it may have reached the broker), plus extra messages the broker may
// redeliver (why names them).
func retriedBound(t testing.TB, load *eventLoad, extra int, why string, bridges ...*bridgeProc) writtenTwiceBound {
	t.Helper()
	retries := 0
	for _, b := range bridges {
		retries += int(b.total("nr_bridge_write_retries_total"))
	}
	republished := 0
	if load != nil {
		republished = load.Republished()
	}
	w := fmt.Sprintf("<= %d write retries + %d agent re-publishes", retries, republished)
	if why != "" {
		w += fmt.Sprintf(" + %d %s", extra, why)
	}
	return writtenTwiceBound{Max: retries + republished + extra, Why: w}
}

// checkDuplicates reads the bridges' nr_bridge_duplicates_total into r
// (a missing series fails the test) and fails the test when more was
// written twice than the bound allows. Call it before the bridges stop
// for the last time or after (bridgeProc keeps the counts of a stopped
// run).
func checkDuplicates(t testing.TB, r *result, bound writtenTwiceBound, bridges ...*bridgeProc) {
	t.Helper()
	r.Deduplicated = 0
	for _, b := range bridges {
		r.Deduplicated += int(b.total("nr_bridge_duplicates_total"))
	}
	r.Bound, r.Why = bound.Max, bound.Why
	if n := r.Duplicates + r.Deduplicated; n > bound.Max {
		t.Errorf("%s: %d events written twice (%d stored twice, %d deduplicated by the backbone), bound %d (%s)",
			r.Name, n, r.Duplicates, r.Deduplicated, bound.Max, bound.Why)
	}
}

var (
	resultsMu sync.Mutex
	results   []result
)

// record prints r (t.Logf and stdout, so it shows in go test -v) and keeps
// it for the summary TestMain prints.
func record(t testing.TB, r result) {
	t.Helper()
	if r.Why == "" {
		t.Errorf("%s: no bound on what may be written twice was checked (checkDuplicates)", r.Name)
	}
	t.Log(r.line())
	fmt.Println(r.line())
	resultsMu.Lock()
	results = append(results, r)
	resultsMu.Unlock()
}

// count compares what was sent with what arrived: arrived counts sent IDs
// found at least once, duplicates the extra copies of sent IDs. IDs that
// arrived without having been acknowledged to the publisher (a publish that
// timed out but reached the broker) are reported in the note.
func count(name string, start time.Time, sent map[string]struct{}, got map[string]int) result {
	r := result{Name: name, Sent: len(sent), Time: time.Since(start)}
	for id := range sent {
		if n := got[id]; n > 0 {
			r.Arrived++
			r.Duplicates += n - 1
		}
	}
	r.Lost = r.Sent - r.Arrived
	extra := 0
	for id := range got {
		if _, ok := sent[id]; !ok {
			extra++
		}
	}
	if extra > 0 {
		r.Note = fmt.Sprintf("%d arrived without a PUBACK to the agent", extra)
	}
	return r
}

// missing lists up to n sent IDs that did not arrive, sorted.
func missing(sent map[string]struct{}, got map[string]int, n int) []string {
	var out []string
	for id := range sent {
		if got[id] == 0 {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// mustNotLoseBounded checks r against bound (checkDuplicates, reading the
// bridges' counters), records it and fails the test when anything was lost.
func mustNotLoseBounded(t testing.TB, r result, sent map[string]struct{}, got map[string]int, bound writtenTwiceBound, bridges ...*bridgeProc) {
	t.Helper()
	checkDuplicates(t, &r, bound, bridges...)
	mustNotLose(t, r, sent, got)
}

// mustNotLose records r and fails the test when anything was lost. r must
// have been through checkDuplicates.
func mustNotLose(t testing.TB, r result, sent map[string]struct{}, got map[string]int) {
	t.Helper()
	record(t, r)
	if r.Lost != 0 {
		t.Errorf("%s: lost %d of %d events, e.g. %v", r.Name, r.Lost, r.Sent, missing(sent, got, 20))
	}
	if r.Sent == 0 {
		t.Errorf("%s: nothing was sent", r.Name)
	}
}

// printSummary prints the results as a Markdown table (for docs/delivery.md) and
// the run's total time.
func printSummary(total time.Duration) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| scenario | sent | arrived | lost | duplicates | deduplicated | bound | time |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %s |\n", r.Name, r.Sent, r.Arrived, r.Lost, r.Duplicates, r.Deduplicated, r.Bound, r.Time.Round(100*time.Millisecond))
	}
	fmt.Fprintf(&b, "\nfaults: %d scenarios in %s\n", len(results), total.Round(time.Second))
	fmt.Fprint(os.Stdout, b.String())
}

// connectNATS connects a reader that reconnects forever; a cleanup closes it.
func connectNATS(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectWait(200*time.Millisecond))
	if err != nil {
		t.Fatalf("connect NATS %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// streamCount returns the messages in stream (matching subject when set),
// or -1 while it cannot be read.
func streamCount(js jetstream.JetStream, stream, subject string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return -1
	}
	if subject == "" {
		info, err := s.Info(ctx)
		if err != nil {
			return -1
		}
		return int(info.State.Msgs)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return -1
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}

// streamMsg is one message read back from a stream.
type streamMsg struct {
	Subject string
	Header  nats.Header
	Data    []byte
}

// readStream reads every message of stream (on subject when set) with an
// ordered consumer.
func readStream(t testing.TB, js jetstream.JetStream, stream, subject string) []streamMsg {
	t.Helper()
	n := streamCount(js, stream, subject)
	if n < 0 {
		t.Fatalf("stream %s not readable", stream)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := jetstream.OrderedConsumerConfig{}
	if subject != "" {
		cfg.FilterSubjects = []string{subject}
	}
	c, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		t.Fatalf("ordered consumer on %s: %v", stream, err)
	}
	out := make([]streamMsg, 0, n)
	for len(out) < n {
		batch, err := c.Fetch(min(n-len(out), 1000), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("fetch %s: %v", stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			out = append(out, streamMsg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
			got++
		}
		if err := batch.Error(); err != nil && got == 0 {
			t.Fatalf("fetch %s after %d of %d: %v", stream, len(out), n, err)
		}
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %d of %d after 2 min", stream, len(out), n)
		}
	}
	return out
}

// collectNATS waits (up to timeout) until stream holds at least want
// messages, then reads it and counts the messages by dedupeID (the ID in
// the payload, else the msg_id in header); if some of
// want are still missing it keeps waiting and reading until timeout.
func collectNATS(t testing.TB, js jetstream.JetStream, stream, header string, sent map[string]struct{}, timeout time.Duration) map[string]int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for streamCount(js, stream, "") < len(sent) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	for {
		got := map[string]int{}
		for _, m := range readStream(t, js, stream, "") {
			got[dedupeID(t, m.Data, m.Header.Get(header))]++
		}
		if len(missing(sent, got, 1)) == 0 || time.Now().After(deadline) {
			return got
		}
		time.Sleep(time.Second)
	}
}

// kafkaRecords reads every record of topic from the start to the end
// offsets of the moment.
func kafkaRecords(t testing.TB, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	want := map[int32]int64{}
	parts := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			parts[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(parts) == 0 {
		return nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts})
	var out []*kgo.Record
	done := map[int32]bool{}
	for len(done) < len(want) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %d records after 2 min", topic, len(out))
		}
		fs.EachError(func(_ string, p int32, err error) { t.Logf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset < want[r.Partition] {
				out = append(out, r)
			}
			if r.Offset+1 >= want[r.Partition] {
				done[r.Partition] = true
			}
		})
	}
	return out
}

// kafkaEnd sums the end offsets of topic, or -1 while they cannot be read.
func kafkaEnd(brokers []string, topic string) int64 {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return -1
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil || ends.Error() != nil {
		return -1
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

func recordHeader(r *kgo.Record, name string) string {
	for _, h := range r.Headers {
		if h.Key == name {
			return string(h.Value)
		}
	}
	return ""
}

// collectKafka is collectNATS for a Kafka topic, counting by dedupeID.
func collectKafka(t testing.TB, brokers []string, topic, header string, sent map[string]struct{}, timeout time.Duration) map[string]int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for kafkaEnd(brokers, topic) < int64(len(sent)) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	for {
		got := map[string]int{}
		for _, r := range kafkaRecords(t, brokers, topic) {
			got[dedupeID(t, r.Value, recordHeader(r, header))]++
		}
		if len(missing(sent, got, 1)) == 0 || time.Now().After(deadline) {
			return got
		}
		time.Sleep(time.Second)
	}
}
