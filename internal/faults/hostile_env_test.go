//go:build faults

package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// The hostile-input suite runs each case against a bridge with small
// windows, so that a message stuck at the head of a worker shows within a
// few hundred events: good traffic after the poison is more than every
// worker's window together.
const (
	hostileWorkers  = 2
	hostileInflight = 20
	// goodEvents are sent after the poison of every case.
	goodEvents = 2*hostileWorkers*hostileInflight + 20
	// hostileWait bounds every positive wait of a case (good traffic
	// arriving, a poison found, a command delivered). Cases that pass are
	// done in a second or two; the bound only matters when one fails.
	hostileWait = 15 * time.Second
)

// Destinations of hostileBackbone.Read.
const (
	destEvents  = "events"
	destReplies = "replies"
	destDLQ     = "dlq"
)

// bbMsg is a message read back from a backbone: a JetStream message or a
// Kafka record, with its headers in order and their names as written.
type bbMsg struct {
	Dest      string
	Subject   string // NATS subject; the Kafka topic
	Key       []byte // Kafka only
	Partition int32  // Kafka only
	Offset    int64  // Kafka only
	Header    [][2]string
	Data      []byte
}

// values returns the values of every header whose name equals name
// ignoring case, in order.
func (m bbMsg) values(name string) []string {
	var out []string
	for _, h := range m.Header {
		if strings.EqualFold(h[0], name) {
			out = append(out, h[1])
		}
	}
	return out
}

// get is the first value of name (any case), "" when absent.
func (m bbMsg) get(name string) string {
	if v := m.values(name); len(v) > 0 {
		return v[0]
	}
	return ""
}

// names lists the header names, for failure messages.
func (m bbMsg) names() []string {
	out := make([]string, 0, len(m.Header))
	for _, h := range m.Header {
		out = append(out, h[0])
	}
	return out
}

// hostileBackbone is what a hostile case needs from NATS or Kafka.
type hostileBackbone interface {
	// Name is nats or kafka.
	Name() string
	// Env is the bridge's environment for this backbone.
	Env(mqttURL, clientID string) map[string]string
	// Read returns every message of destEvents, destReplies or destDLQ.
	Read(t testing.TB, dest string) []bbMsg
	// DedupeHeader is Nats-Msg-Id or Nr-Msg-Id.
	DedupeHeader() string
	// SendCommand writes one command to the commands stream (NATS) or
	// topic (Kafka, partition 0) for target "org/<org>/node/<node>" and
	// waits for the backbone's acknowledgement.
	SendCommand(t testing.TB, target string, key, body []byte, headers map[string][]byte) error
	// CommandsSettled reports whether the commands stream or topic has
	// nothing left to do: NATS: NR_COMMANDS empty, the consumer has no ack
	// pending and no redelivery; Kafka: the group committed partition 0 up
	// to its end. It also says what it saw.
	CommandsSettled(t testing.TB) (bool, string)
}

// natsHostile is the NATS backbone of the hostile suite: the in-process
// nats-server with JetStream.
type natsHostile struct {
	ns *testserver.NATS
	js jetstream.JetStream
}

func (n *natsHostile) Name() string { return "nats" }

func (n *natsHostile) Env(mqttURL, clientID string) map[string]string {
	return natsEnv(mqttURL, n.ns.URL(), clientID)
}

func (n *natsHostile) DedupeHeader() string { return "Nats-Msg-Id" }

var natsStreams = map[string]string{destEvents: "NR_EVENTS", destReplies: "NR_REPLIES", destDLQ: "NR_DLQ"}

func (n *natsHostile) Read(t testing.TB, dest string) []bbMsg {
	t.Helper()
	stream := natsStreams[dest]
	if streamCount(n.js, stream, "") <= 0 {
		return nil
	}
	var out []bbMsg
	for _, m := range readStream(t, n.js, stream, "") {
		b := bbMsg{Dest: dest, Subject: m.Subject, Data: m.Data}
		for k, vs := range m.Header {
			for _, v := range vs {
				b.Header = append(b.Header, [2]string{k, v})
			}
		}
		out = append(out, b)
	}
	return out
}

func (n *natsHostile) SendCommand(t testing.TB, target string, _ []byte, body []byte, _ map[string][]byte) error {
	t.Helper()
	return streamCommand(n.js, "nr."+strings.ReplaceAll(target, "/", ".")+".cmd", body)
}

func (n *natsHostile) CommandsSettled(t testing.TB) (bool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := n.js.Consumer(ctx, "NR_COMMANDS", "nr-bridge")
	if err != nil {
		return false, fmt.Sprintf("consumer: %v", err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return false, fmt.Sprintf("consumer info: %v", err)
	}
	left := streamCount(n.js, "NR_COMMANDS", "")
	seen := fmt.Sprintf("NR_COMMANDS holds %d, consumer num_ack_pending=%d num_redelivered=%d num_pending=%d delivered=%d",
		left, info.NumAckPending, info.NumRedelivered, info.NumPending, info.Delivered.Consumer)
	return left == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0 && info.NumPending == 0, seen
}

// kafkaHostile is the Kafka backbone of the hostile suite: kfake on a real
// port.
type kafkaHostile struct {
	k *testserver.Kafka
}

func (k *kafkaHostile) Name() string { return "kafka" }

func (k *kafkaHostile) Env(mqttURL, clientID string) map[string]string {
	return kafkaEnv(mqttURL, k.k.Brokers(), clientID)
}

func (k *kafkaHostile) DedupeHeader() string { return "Nr-Msg-Id" }

var kafkaTopics = map[string]string{destEvents: "nr.events", destReplies: "nr.replies", destDLQ: "nr.dlq"}

func (k *kafkaHostile) Read(t testing.TB, dest string) []bbMsg {
	t.Helper()
	topic := kafkaTopics[dest]
	if kafkaEnd(k.k.Brokers(), topic) <= 0 {
		return nil
	}
	var out []bbMsg
	for _, r := range kafkaRecords(t, k.k.Brokers(), topic) {
		b := bbMsg{Dest: dest, Subject: r.Topic, Key: r.Key, Partition: r.Partition, Offset: r.Offset, Data: r.Value}
		for _, h := range r.Headers {
			b.Header = append(b.Header, [2]string{h.Key, string(h.Value)})
		}
		out = append(out, b)
	}
	return out
}

func (k *kafkaHostile) SendCommand(t testing.TB, target string, key, body []byte, headers map[string][]byte) error {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.k.Brokers()...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		// kfake's max.message.bytes is 1,048,588: room for a record with
		// a 1,000,000-byte header.
		kgo.ProducerBatchMaxBytes(1_048_000))
	if err != nil {
		return err
	}
	defer cl.Close()
	if key == nil {
		key = []byte(target)
	}
	r := &kgo.Record{Topic: "nr.commands", Partition: 0, Key: key, Value: body}
	for name, v := range headers {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: name, Value: v})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cl.ProduceSync(ctx, r).FirstErr()
}

func (k *kafkaHostile) CommandsSettled(t testing.TB) (bool, string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.k.Brokers()...))
	if err != nil {
		return false, err.Error()
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, "nr.commands")
	if err != nil {
		return false, fmt.Sprintf("end offsets: %v", err)
	}
	end, ok := ends.Lookup("nr.commands", 0)
	if !ok {
		return false, "no end offset for nr.commands/0"
	}
	offs, err := adm.FetchOffsets(ctx, "nr-bridge")
	if err != nil {
		return false, fmt.Sprintf("committed offsets: %v", err)
	}
	committed := int64(-1)
	if o, ok := offs.Lookup("nr.commands", 0); ok {
		committed = o.At
	}
	return committed == end.Offset, fmt.Sprintf("nr.commands/0 end offset %d, group nr-bridge committed %d", end.Offset, committed)
}

// hostileEnv is one case's world: its own Mosquitto, backbone and bridge
// (2 workers x 20 in flight), and an agent connection.
type hostileEnv struct {
	t     *testing.T
	bb    hostileBackbone
	mq    *testserver.Mosquitto
	b     *bridgeProc
	agent *mqttClient
	start time.Time
	res   hostileResult
}

// newHostileEnv starts the servers and the bridge for one case of
// backbone ("nats" or "kafka").
func newHostileEnv(t *testing.T, backbone, name string) *hostileEnv {
	t.Helper()
	e := &hostileEnv{t: t, start: time.Now(), res: hostileResult{Backbone: backbone, Case: name}}
	e.mq = testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	switch backbone {
	case "nats":
		ns := testserver.StartNATS(t, testserver.NATSOptions{})
		_, js := connectNATS(t, ns.URL())
		e.bb = &natsHostile{ns: ns, js: js}
	case "kafka":
		e.bb = &kafkaHostile{k: testserver.StartKafka(t, testserver.KafkaOptions{})}
	default:
		t.Fatalf("backbone %q", backbone)
	}
	env := e.bb.Env(e.mq.URL(), "hostile-"+backbone+"-"+name)
	env["MQTT_WORKERS"] = strconv.Itoa(hostileWorkers)
	env["MQTT_MAX_INFLIGHT"] = strconv.Itoa(hostileInflight)
	env["NATS_COMMANDS_RETRY_MAX"] = "2s"
	e.b = startBridge(t, bridgeBinary(t, false), "bridge-"+backbone+"-"+name, env)
	if n, ok := e.bb.(*natsHostile); ok {
		waitStream(t, n.js, "NR_COMMANDS")
	}
	e.agent = connectMQTT(t, e.mq.URL(), "agent-"+backbone+"-"+name, mqttOptions{})
	return e
}

// publish publishes one event or reply at QoS 1 from the agent and fails
// the test when the broker does not acknowledge it.
func (e *hostileEnv) publish(topic string, payload []byte, props *paho.PublishProperties) {
	e.t.Helper()
	noSubs := 0
	if err := e.agent.publish(topic, payload, props, time.Now().Add(30*time.Second), true, &noSubs); err != nil {
		e.t.Fatalf("publish to %q: %v", topic, err)
	}
	e.res.Sent++
}

// goodTopic is where good traffic goes; its payload names the event.
const goodTopic = "org/good/node/g1/events"

// sendGood publishes goodEvents good events tagged tag, each with its own
// msg_id, and returns their payloads.
func (e *hostileEnv) sendGood(tag string) map[string]bool {
	e.t.Helper()
	sent := make(map[string]bool, goodEvents)
	for i := range goodEvents {
		id := fmt.Sprintf("good-%s-%d", tag, i)
		payload := fmt.Sprintf(`{"good":%q}`, id)
		noSubs := 0
		if err := e.agent.publish(goodTopic, []byte(payload), userProps("msg_id", id), time.Now().Add(30*time.Second), true, &noSubs); err != nil {
			e.t.Fatalf("publish good event %s: %v", id, err)
		}
		sent[payload] = false
	}
	e.res.GoodSent += len(sent)
	return sent
}

// waitGood waits (hostileWait) for every good event of sent to be stored,
// and records how many were.
func (e *hostileEnv) waitGood(sent map[string]bool) {
	e.t.Helper()
	arrived := 0
	deadline := time.Now().Add(hostileWait)
	for {
		arrived = 0
		for _, m := range e.bb.Read(e.t, destEvents) {
			if _, ok := sent[string(m.Data)]; ok && !sent[string(m.Data)] {
				sent[string(m.Data)] = true
			}
		}
		for _, ok := range sent {
			if ok {
				arrived++
			}
		}
		if arrived == len(sent) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.res.GoodArrived += arrived
	if arrived != len(sent) {
		e.t.Errorf("good traffic sent after the poison: %d of %d arrived within %v", arrived, len(sent), hostileWait)
	}
}

// find waits (hostileWait) until every matcher of want finds at least one
// message in the events or replies stream or the DLQ, and returns the
// matches of each by destination. A matcher that found nothing is an error.
func (e *hostileEnv) find(want map[string]func(bbMsg) bool) map[string]map[string][]bbMsg {
	e.t.Helper()
	deadline := time.Now().Add(hostileWait)
	for {
		found := e.findNow(want)
		if len(found) == len(want) || time.Now().After(deadline) {
			for name := range want {
				if found[name] == nil {
					e.t.Errorf("%s: neither stored nor dead-lettered within %v", name, hostileWait)
				}
			}
			return found
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// findNow is one pass of find: the matches of each matcher of want, by
// destination, without waiting.
func (e *hostileEnv) findNow(want map[string]func(bbMsg) bool) map[string]map[string][]bbMsg {
	e.t.Helper()
	found := make(map[string]map[string][]bbMsg, len(want))
	for _, d := range []string{destEvents, destReplies, destDLQ} {
		for _, m := range e.bb.Read(e.t, d) {
			for name, match := range want {
				if match(m) {
					if found[name] == nil {
						found[name] = map[string][]bbMsg{}
					}
					found[name][d] = append(found[name][d], m)
				}
			}
		}
	}
	return found
}

// byTopic matches a message whose Nr-Topic is topic (or its quoted form,
// for a topic that is not printable).
func byTopic(topic string) func(bbMsg) bool {
	quoted := strconv.QuoteToASCII(topic)
	return func(m bbMsg) bool {
		v := m.get("Nr-Topic")
		return v == topic || v == quoted
	}
}

// tally counts what a case's poison became.
func (e *hostileEnv) tally(found map[string][]bbMsg) {
	e.res.Stored += len(found[destEvents]) + len(found[destReplies])
	for _, m := range found[destDLQ] {
		e.res.DeadLettered++
		e.res.Reasons = append(e.res.Reasons, m.get("Nr-Error"))
	}
}

// finish checks what every case checks at its end (no "message dropped" in
// the bridge log, /readyz 200) and records the case's line.
func (e *hostileEnv) finish() {
	e.t.Helper()
	if n := e.b.countLog("message dropped"); n > 0 {
		e.t.Errorf("the bridge logged %d \"message dropped\" lines", n)
		e.res.Note = join(e.res.Note, fmt.Sprintf("%d \"message dropped\" log lines", n))
	}
	if !e.b.ready() {
		e.t.Errorf("/readyz is not 200 at the end of the case")
		e.res.Note = join(e.res.Note, "/readyz not 200")
	}
	e.res.Time = time.Since(e.start)
	e.res.Failed = e.t.Failed()
	recordHostile(e.t, e.res)
}

// hostileResult is one hostile case's line.
type hostileResult struct {
	Backbone, Case string
	// Sent is the poison sent (events, replies or commands).
	Sent int
	// Stored is poison found in its stream or topic (commands: published
	// to MQTT).
	Stored int
	// DeadLettered is poison found in the DLQ; Reasons their Nr-Error.
	DeadLettered int
	Reasons      []string
	// GoodSent and GoodArrived count the good traffic sent after the
	// poison (events, or commands for the command cases).
	GoodSent, GoodArrived int
	Note                  string
	Time                  time.Duration
	Failed                bool
}

func (r hostileResult) line() string {
	reasons := make([]string, 0, len(r.Reasons))
	seen := map[string]int{}
	for _, s := range r.Reasons {
		if len(s) > 120 {
			s = s[:120] + "..."
		}
		if seen[s] == 0 {
			reasons = append(reasons, s)
		}
		seen[s]++
	}
	for i, s := range reasons {
		if seen[s] > 1 {
			reasons[i] = fmt.Sprintf("%dx %s", seen[s], s)
		}
	}
	verdict := "PASS"
	if r.Failed {
		verdict = "FAIL"
	}
	s := fmt.Sprintf("hostile=%s/%s %s sent=%d stored=%d dead_lettered=%d good=%d/%d time=%s",
		r.Backbone, r.Case, verdict, r.Sent, r.Stored, r.DeadLettered, r.GoodArrived, r.GoodSent, r.Time.Round(100*time.Millisecond))
	if len(reasons) > 0 {
		s += fmt.Sprintf(" reasons=%q", strings.Join(reasons, " | "))
	}
	if r.Note != "" {
		s += fmt.Sprintf(" note=%q", r.Note)
	}
	return s
}

// recordHostile prints r and adds it to the summary table TestMain prints
// (arrived there is stored + dead-lettered + good arrived).
func recordHostile(t testing.TB, r hostileResult) {
	t.Helper()
	t.Log(r.line())
	fmt.Println(r.line())
	sent := r.Sent + r.GoodSent
	arrived := r.Stored + r.DeadLettered + r.GoodArrived
	resultsMu.Lock()
	results = append(results, result{
		Name:    "hostile " + r.Backbone + "/" + r.Case,
		Sent:    sent,
		Arrived: arrived,
		Lost:    max(sent-arrived, 0),
		// The case's own assertions (exact stored and dead-lettered
		// counts) stand for duplicates here; none is counted apart.
		Bound:   -1,
		Why:     "not counted apart: the case asserts its exact stored and dead-lettered counts",
		Time:    r.Time,
		Note:    r.Note,
		Printed: r.line(),
	})
	resultsMu.Unlock()
}

// cmdSubscriber is a node's MQTT connection subscribed to its command
// topic; it keeps the correlation data of every command received, in
// order.
type cmdSubscriber struct {
	mu  sync.Mutex
	got []string
	raw [][]byte
}

func subscribeCommands(t testing.TB, brokerURL, clientID, filter string) *cmdSubscriber {
	t.Helper()
	s := &cmdSubscriber{}
	connectMQTT(t, brokerURL, clientID, mqttOptions{
		Filters: []string{filter},
		OnMessage: func(p *paho.Publish) {
			id := ""
			if p.Properties != nil {
				id = string(p.Properties.CorrelationData)
			}
			s.mu.Lock()
			s.got = append(s.got, id)
			s.raw = append(s.raw, bytes.Clone(p.Payload))
			s.mu.Unlock()
		},
	})
	return s
}

func (s *cmdSubscriber) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

// waitFor waits (hostileWait) until every id was received and reports
// whether they were.
func (s *cmdSubscriber) waitFor(ids ...string) bool {
	deadline := time.Now().Add(hostileWait)
	for {
		got := map[string]bool{}
		for _, id := range s.received() {
			got[id] = true
		}
		all := true
		for _, id := range ids {
			all = all && got[id]
		}
		if all || time.Now().After(deadline) {
			return all
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cmdDoc is a command body for correlation id, valid for two minutes,
// with extra members appended inside the object (extra starts with a
// comma).
func cmdDoc(id, extra string) []byte {
	return fmt.Appendf(nil, `{"type":"ping","version":1,"correlation_id":%q,"issued_at":%d,"ttl_sec":120,"payload":{}%s}`,
		id, time.Now().Unix(), extra)
}

// postCommand POSTs body to path on the bridge and returns the status and
// the decoded JSON answer.
func (e *hostileEnv) postCommand(path string, body []byte) (int, map[string]any) {
	e.t.Helper()
	c := http.Client{Timeout: 15 * time.Second}
	resp, err := c.Post("http://"+e.b.addr+path, "application/json", bytes.NewReader(body))
	if err != nil {
		e.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		doc = map[string]any{"_raw": string(data)}
	}
	return resp.StatusCode, doc
}

// getStatus GETs a command's status document; it returns the status code
// and the raw body.
func (e *hostileEnv) getStatus(org, id string) (int, []byte) {
	e.t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + e.b.addr + "/org/" + org + "/commands/" + id)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}
