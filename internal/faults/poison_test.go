//go:build faults

package faults

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/testserver"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// poisonEvent is one kind of bad event an agent may send.
type poisonEvent struct {
	kind   string // msg_id prefix
	n      int
	topic  string
	bytes  int      // payload size
	props  []string // extra user properties (name, value)
	reason string   // what Nr-Error must contain
}

var poisonEvents = []poisonEvent{
	{kind: "badorg", n: 100, topic: "org/bad.org/node/n1/events", bytes: 100, reason: "invalid id"},
	{kind: "dollarnode", n: 100, topic: "org/o/node/$x/events", bytes: 100, reason: "invalid id"},
	{kind: "badreply", n: 50, topic: "org/o1/node/n 1/reply", bytes: 100, reason: "invalid id"},
	{kind: "huge", n: 10, topic: "org/o1/node/big/events", bytes: 1536 << 10, reason: "too large"},
	{kind: "longvalue", n: 100, topic: "org/o1/node/p1/events", bytes: 100, props: []string{"site", strings.Repeat("a", 5000)}, reason: "over 4096 bytes"},
	{kind: "badname", n: 100, topic: "org/o1/node/p2/events", bytes: 100, props: []string{"bad name", "x"}, reason: "cannot be a header name"},
}

// poisonCommand is one kind of malformed command on NR_COMMANDS.
type poisonCommand struct {
	kind    string
	subject func(i int) string
	body    func(i int) []byte
	reason  string // what Nr-Error must contain
}

var poisonCommands = []poisonCommand{
	{
		kind:    "notjson",
		subject: func(int) string { return "nr.org.o1.node.n001.cmd" },
		body:    func(i int) []byte { return fmt.Appendf(nil, "not json %d", i) },
		reason:  "not a JSON object",
	},
	{
		kind:    "badfield",
		subject: func(int) string { return "nr.org.o1.node.n001.cmd" },
		body: func(i int) []byte {
			return fmt.Appendf(nil, `{"type":"x","version":0,"correlation_id":"bad-field-%d","issued_at":%d,"ttl_sec":60,"payload":{}}`, i, time.Now().Unix())
		},
		reason: "version",
	},
	{
		kind:    "badtarget",
		subject: func(i int) string { return fmt.Sprintf("nr.org.o1.node.bad$%d.cmd", i) },
		body:    func(i int) []byte { return commandDoc(fmt.Sprintf("bad-target-%d", i), time.Now(), time.Minute) },
		reason:  "invalid id",
	},
	{
		kind:    "expired",
		subject: func(int) string { return "nr.org.o1.node.n001.cmd" },
		body: func(i int) []byte {
			return commandDoc(fmt.Sprintf("expired-%d", i), time.Now().Add(-time.Hour), time.Minute)
		},
		reason: "expired",
	},
}

// brokerRefused are user properties a header cannot carry that MQTT 5
// itself forbids (MQTT-1.5.4-1: a UTF-8 string with invalid UTF-8 or a
// control character is a malformed packet): Mosquitto closes the
// connection without a PUBACK, so they never reach the bridge (whose own
// check, for brokers that let them through, is in bridge.NewMessage and
// FuzzNewMessage).
var brokerRefused = map[string][]string{
	"invalid UTF-8 value":     {"site", "ly\xffon"},
	"control character value": {"site", "lyon\x01\n"},
}

// TestPoisonInput sends, beside a steady good load, events with invalid
// IDs, payloads over NATS's max_payload (1 MiB), user properties no header
// can carry, attempts with invalid UTF-8 in a user property, and a flood
// of 10,000 malformed commands on NR_COMMANDS with 100 good ones among
// them. Every bad message must be dead-lettered with its reason, and the
// good traffic must all arrive.
func TestPoisonInput(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	b := startBridge(t, bridgeBinary(t, false), "bridge", natsEnv(mq.URL(), ns.URL(), "fi-poison"))
	node := startCmdNode(t, mq.URL(), "poison-node")
	_, js := connectNATS(t, ns.URL())
	waitStream(t, js, "NR_COMMANDS")
	load := startLoad(t, mq.URL(), defaultLoad("good"))
	waitSent(t, load, 250)

	// Properties MQTT forbids, each from its own connection: the broker
	// drops the connection and the publish times out after 10 s.
	refused := make(chan string, len(brokerRefused))
	for what, prop := range brokerRefused {
		c := connectMQTT(t, mq.URL(), "poison-"+strings.ReplaceAll(what, " ", "-"), mqttOptions{})
		go func() {
			id := "p-refused-" + strings.ReplaceAll(what, " ", "-")
			err := c.publishOnce("org/o1/node/p3/events", []byte("x"), userProps("msg_id", id, prop[0], prop[1]))
			refused <- fmt.Sprintf("%s: %s", what, utf8Outcome(err))
		}()
	}

	// Bad events, from one agent connection.
	agent := connectMQTT(t, mq.URL(), "poison-agent", mqttOptions{})
	poisonSent := map[string]string{} // msg_id -> the reason expected
	for _, p := range poisonEvents {
		payload := make([]byte, p.bytes)
		for i := range p.n {
			id := fmt.Sprintf("p-%s-%d", p.kind, i)
			props := userProps(append([]string{"msg_id", id}, p.props...)...)
			var noSubs int
			if err := agent.publish(p.topic, payload, props, time.Now().Add(30*time.Second), false, &noSubs); err != nil {
				t.Fatalf("publish %s: %v", id, err)
			}
			poisonSent[id] = p.reason
		}
	}

	// The command flood, with good commands among the bad ones.
	var goodCmds []string
	badCount := map[string]int{}
	flood := 0
	for i := 0; flood < 10000; i++ {
		for _, c := range poisonCommands {
			if err := streamCommand(js, c.subject(i), c.body(i)); err != nil {
				t.Fatal(err)
			}
			badCount[c.kind]++
			flood++
		}
		if i%25 == 0 {
			id := fmt.Sprintf("good-cmd-%d", i)
			if err := streamCommand(js, fmt.Sprintf("nr.org.o1.node.n%03d.cmd", i%10), commandDoc(id, time.Now(), 2*time.Minute)); err != nil {
				t.Fatal(err)
			}
			goodCmds = append(goodCmds, id)
		}
	}
	floodWritten := time.Since(start)
	time.Sleep(2 * time.Second)
	load.Stop()

	sent := load.IDs()
	got := collectNATS(t, js, "NR_EVENTS", "Nats-Msg-Id", sent, 60*time.Second)
	r := count("poison-events-good-traffic", start, sent, got)

	// Dead letters of events: by msg_id, with their reasons.
	testserver.WaitFor(t, 60*time.Second, "every bad event dead-lettered", func() bool {
		return streamCount(js, "NR_DLQ", "nr.dlq.events")+streamCount(js, "NR_DLQ", "nr.dlq.reply") >= len(poisonSent)
	})
	dl := map[string]string{}
	for _, m := range readStream(t, js, "NR_DLQ", "") {
		if strings.HasPrefix(m.Subject, "nr.dlq.events") || strings.HasPrefix(m.Subject, "nr.dlq.reply") {
			// A dead letter whose topic has no valid IDs is scoped to its
			// whole topic (docs/messages.md): <Nr-Topic>/<msg_id>.
			id := m.Header.Get("Nats-Msg-Id")
			if scoped, ok := strings.CutPrefix(id, m.Header.Get("Nr-Topic")+"/"); ok {
				id = scoped
			} else {
				id = bridge.MsgIDOf(id)
			}
			dl[id] = m.Header.Get("Nr-Error")
		}
	}
	byKind := map[string]int{}
	for id, want := range poisonSent {
		reason, ok := dl[id]
		switch {
		case !ok:
			t.Errorf("bad event %s not dead-lettered", id)
		case !strings.Contains(reason, want):
			t.Errorf("bad event %s dead-lettered with %q, want %q", id, reason, want)
		default:
			byKind[strings.Split(id, "-")[1]]++
		}
	}
	var outcomes []string
	for range brokerRefused {
		o := <-refused
		outcomes = append(outcomes, o)
		if strings.Contains(o, "accepted") {
			t.Errorf("the broker accepted a property MQTT forbids (%s); it must then be dead-lettered", o)
		}
	}
	sort.Strings(outcomes)
	r.Note = fmt.Sprintf("dead-lettered %s; %s", kinds(byKind), strings.Join(outcomes, "; "))
	mustNotLoseBounded(t, r, sent, got, exactlyOnce, b)

	// Dead letters of commands.
	testserver.WaitFor(t, 90*time.Second, "every bad command dead-lettered", func() bool {
		return streamCount(js, "NR_DLQ", "nr.dlq.cmd") >= flood
	})
	cmdByKind := map[string]int{}
	unexplained := 0
	for _, m := range readStream(t, js, "NR_DLQ", "nr.dlq.cmd") {
		reason := m.Header.Get("Nr-Error")
		matched := false
		for _, c := range poisonCommands {
			if strings.Contains(reason, c.reason) {
				cmdByKind[c.kind]++
				matched = true
				break
			}
		}
		if !matched || m.Header.Get("Nr-Subject") == "" {
			unexplained++
			if unexplained <= 3 {
				t.Errorf("dead letter with Nr-Error %q, Nr-Subject %q", reason, m.Header.Get("Nr-Subject"))
			}
		}
	}
	for _, c := range poisonCommands {
		if cmdByKind[c.kind] != badCount[c.kind] {
			t.Errorf("%s: %d dead-lettered, want %d", c.kind, cmdByKind[c.kind], badCount[c.kind])
		}
	}
	testserver.WaitFor(t, 30*time.Second, "every good command delivered", func() bool {
		d := node.delivered()
		for _, id := range goodCmds {
			if d[id] == 0 {
				return false
			}
		}
		return true
	})
	delivered := node.delivered()
	dups := 0
	for _, id := range goodCmds {
		dups += delivered[id] - 1
	}
	dead := 0
	for _, n := range cmdByKind {
		dead += n
	}
	rc := result{
		Name:       "poison-commands-10000",
		Sent:       flood + len(goodCmds),
		Arrived:    dead + len(goodCmds),
		Lost:       flood + len(goodCmds) - dead - len(goodCmds),
		Duplicates: dups,
		Time:       time.Since(start),
		Note: fmt.Sprintf("dead-lettered %s; %d good commands delivered; flood written in %s",
			kinds(cmdByKind), len(goodCmds), floodWritten.Round(100*time.Millisecond)),
	}
	checkDuplicates(t, &rc, exactlyOnce, b)
	record(t, rc)
	if n := streamCount(js, "NR_COMMANDS", ""); n != 0 {
		t.Errorf("%d commands left in NR_COMMANDS", n)
	}
	if n := b.countLog("MQTT connection lost"); n > 0 {
		t.Errorf("the bridge lost %d MQTT connections", n)
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
}

func kinds(m map[string]int) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func utf8Outcome(err error) string {
	if err == nil {
		return "accepted by the broker"
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "refused by the broker (malformed packet: connection closed, no PUBACK)"
	}
	return "refused by the broker: " + err.Error()
}
