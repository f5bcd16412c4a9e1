//go:build faults

package faults

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// Bounds of what one fuzz input may make the agent send: a level of the
// topic, the user properties, the payload and its nesting.
const (
	fuzzMaxLevel    = 200
	fuzzMaxValue    = 8000
	fuzzMaxCount    = 400
	fuzzMaxProps    = 2 << 20
	fuzzMaxPayload  = 1600 << 10
	fuzzMaxNest     = 20000
	fuzzSettleLimit = 10 * time.Second
)

// mqttString makes s a string MQTT and Mosquitto accept (MQTT-1.5.4):
// valid UTF-8 without NUL, control characters or non-characters, at most
// limit bytes; with level set also without the topic separator and
// wildcards.
func mqttString(s string, limit int, level bool) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "") {
		switch {
		case unicode.IsControl(r), r >= 0xFDD0 && r <= 0xFDEF, r&0xFFFE == 0xFFFE:
			continue
		case level && (r == '/' || r == '+' || r == '#'):
			continue
		}
		if b.Len()+utf8.RuneLen(r) > limit {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// fuzzInput is one fuzz input turned into what the agent publishes.
type fuzzInput struct {
	org, node, kind, topic string
	msgID, contentType     string
	props                  []paho.UserProperty
	payload                []byte
}

func newFuzzInput(org, node string, reply bool, names, value string, valueSize, count uint16,
	contentType, msgID string, payload []byte, repeat uint32, nest uint16) fuzzInput {
	in := fuzzInput{
		org:         mqttString(org, fuzzMaxLevel, true),
		node:        mqttString(node, fuzzMaxLevel, true),
		kind:        "events",
		msgID:       mqttString(msgID, 300, false),
		contentType: mqttString(contentType, 300, false),
	}
	if in.org == "good" {
		in.org = "good_" // the good traffic's org
	}
	if reply {
		in.kind = "reply"
	}
	in.topic = "org/" + in.org + "/node/" + in.node + "/" + in.kind
	if in.msgID != "" {
		in.props = append(in.props, paho.UserProperty{Key: "msg_id", Value: in.msgID})
	}
	var nameList []string
	if names != "" {
		for _, n := range strings.Split(names, ",") {
			n = mqttString(n, 300, false)
			if n == "msg_id" {
				n = "msg_id_" // the input's msg_id is msgID alone
			}
			nameList = append(nameList, n)
		}
	}
	if len(nameList) > 0 {
		v := mqttString(value, fuzzMaxValue, false)
		if v == "" {
			v = "v"
		}
		size := min(int(valueSize), fuzzMaxValue)
		v = strings.Repeat(v, size/len(v)+1)[:size]
		v = strings.ToValidUTF8(v, "") // a cut multi-byte rune
		n := min(int(count), fuzzMaxCount)
		if len(v) > 0 {
			n = min(n, fuzzMaxProps/len(v))
		}
		for i := range n {
			in.props = append(in.props, paho.UserProperty{Key: nameList[i%len(nameList)], Value: v})
		}
	}
	if len(payload) > 0 {
		reps := max(int(repeat), 1)
		reps = min(reps, fuzzMaxPayload/len(payload))
		payload = bytes.Repeat(payload, max(reps, 1))
		if len(payload) > fuzzMaxPayload {
			payload = payload[:fuzzMaxPayload]
		}
	}
	n := min(int(nest), fuzzMaxNest)
	in.payload = append(append(bytes.Repeat([]byte("["), n), payload...), bytes.Repeat([]byte("]"), n)...)
	return in
}

// fuzzFixture is what FuzzHostileEvent starts once per process: Mosquitto,
// nats-server, the nr-bridge binary and an agent connection.
type fuzzFixture struct {
	b     *bridgeProc
	js    jetstream.JetStream
	agent *mqttClient
	seen  map[string]bool // org, node and msg_id of every input sent
	// late counts, by topic, repeated inputs that had not arrived when the
	// good event after them did: JetStream deduplicates a repeat only in
	// the stream that has the first copy, so such a repeat may still
	// arrive, in another stream, during a later input.
	late map[string]int
	n    int
}

// FuzzHostileEvent sends random events and replies (topic levels, user
// property names, sizes and counts, content type, msg_id, payload size and
// nesting) through a real Mosquitto into the nr-bridge binary on NATS,
// started once for the whole run (2 workers x 5 in flight). For each
// input: exactly one new message in NR_EVENTS, NR_REPLIES or NR_DLQ (or
// at most one when it repeats a msg_id of the same org and node), and a
// good event sent after it arrives. A stored message carries no Nats-*
// header but the bridge's <org>/<node>/<msg_id> Nats-Msg-Id, the MQTT
// content type as Content-Type, and the payload byte for byte; a dead
// letter carries Nr-Error and Nr-Topic.
//
// Its seeds (testdata/fuzz/FuzzHostileEvent) are the event and reply cases
// of TestHostile; go test -tags faults runs them as a normal test.
func FuzzHostileEvent(f *testing.F) {
	mq := testserver.StartMosquitto(f, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(f, testserver.NATSOptions{})
	env := natsEnv(mq.URL(), ns.URL(), fmt.Sprintf("fuzz-%d", os.Getpid()))
	env["MQTT_WORKERS"] = "2"
	env["MQTT_MAX_INFLIGHT"] = "5"
	env["LOG_LEVEL"] = "warn"
	fx := &fuzzFixture{seen: map[string]bool{}, late: map[string]int{}}
	fx.b = startBridge(f, bridgeBinary(f, false), fmt.Sprintf("bridge-fuzz-%d", os.Getpid()), env)
	_, fx.js = connectNATS(f, ns.URL())
	fx.agent = connectMQTT(f, mq.URL(), fmt.Sprintf("fuzz-agent-%d", os.Getpid()), mqttOptions{})

	f.Fuzz(func(t *testing.T, org, node string, reply bool, names, value string, valueSize, count uint16,
		contentType, msgID string, payload []byte, repeat uint32, nest uint16) {
		in := newFuzzInput(org, node, reply, names, value, valueSize, count, contentType, msgID, payload, repeat, nest)
		fx.check(t, in)
	})
}

// lastSeqs returns the last sequence of the three streams.
func (fx *fuzzFixture) lastSeqs(t *testing.T) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, s := range []string{"NR_EVENTS", "NR_REPLIES", "NR_DLQ"} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		st, err := fx.js.Stream(ctx, s)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = st.Info(ctx)
		}
		cancel()
		if err != nil {
			t.Fatalf("stream %s: %v", s, err)
		}
		out[s] = info.State.LastSeq
	}
	return out
}

// newMsgs returns the messages of the three streams after the sequences
// of before, without the good traffic, and whether the good event good
// was among them.
func (fx *fuzzFixture) newMsgs(t *testing.T, before map[string]uint64, good string) ([]*jetstream.RawStreamMsg, bool) {
	t.Helper()
	var out []*jetstream.RawStreamMsg
	goodSeen := false
	for s, last := range fx.lastSeqs(t) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := fx.js.Stream(ctx, s)
		if err != nil {
			cancel()
			t.Fatalf("stream %s: %v", s, err)
		}
		for seq := before[s] + 1; seq <= last; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if err != nil {
				cancel()
				t.Fatalf("%s seq %d: %v", s, seq, err)
			}
			if m.Subject == "nr.org.good.node.g1.events" {
				goodSeen = goodSeen || string(m.Data) == good
				continue
			}
			out = append(out, m)
		}
		cancel()
	}
	return out, goodSeen
}

// check sends one input and a good event after it, and checks what the
// bridge made of the input.
func (fx *fuzzFixture) check(t *testing.T, in fuzzInput) {
	fx.n++
	key := in.org + "\x00" + in.node + "\x00" + in.msgID
	repeated := in.msgID != "" && fx.seen[key]
	fx.seen[key] = true
	before := fx.lastSeqs(t)

	props := &paho.PublishProperties{User: in.props, ContentType: in.contentType}
	noSubs := 0
	if err := fx.agent.publish(in.topic, in.payload, props, time.Now().Add(30*time.Second), true, &noSubs); err != nil {
		t.Fatalf("publish to %q (%d properties, %d bytes): %v", in.topic, len(in.props), len(in.payload), err)
	}
	goodID := fmt.Sprintf("fuzz-good-%d-%d", os.Getpid(), fx.n)
	good := fmt.Sprintf(`{"good":%q}`, goodID)
	if err := fx.agent.publish("org/good/node/g1/events", []byte(good), userProps("msg_id", goodID), time.Now().Add(30*time.Second), true, &noSubs); err != nil {
		t.Fatalf("publish good event: %v", err)
	}

	var msgs []*jetstream.RawStreamMsg
	var lateSeen map[string]int
	goodSeen := false
	deadline := time.Now().Add(fuzzSettleLimit)
	for {
		msgs, goodSeen = fx.newMsgs(t, before, good)
		msgs, lateSeen = fx.dropLate(in, msgs)
		if goodSeen && (len(msgs) >= 1 || repeated) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	desc := fmt.Sprintf("topic %q, %d user properties, content type %q, msg_id %q, %d-byte payload", in.topic, len(in.props), in.contentType, in.msgID, len(in.payload))
	if !goodSeen {
		t.Errorf("%s: the good event sent after it did not arrive within %v", desc, fuzzSettleLimit)
	}
	switch {
	case len(msgs) == 0 && !repeated:
		t.Fatalf("%s: neither stored nor dead-lettered within %v", desc, fuzzSettleLimit)
	case len(msgs) > 1:
		var where []string
		for _, m := range msgs {
			where = append(where, fmt.Sprintf("%s (Nr-Error %q)", m.Subject, m.Header.Get("Nr-Error")))
		}
		t.Fatalf("%s: %d new messages, want one: %v", desc, len(msgs), where)
	}
	for topic, n := range lateSeen {
		if fx.late[topic] -= n; fx.late[topic] <= 0 {
			delete(fx.late, topic)
		}
	}
	if len(msgs) == 0 && repeated {
		fx.late[in.topic]++
	}
	for _, m := range msgs {
		fx.checkMsg(t, desc, in, m)
	}
	if n := fx.b.countLog("message dropped"); n > 0 {
		t.Fatalf("%s: the bridge logged %d \"message dropped\" lines", desc, n)
	}
}

// dropLate takes out of msgs the late arrivals of earlier repeated inputs
// (by Nr-Topic), keeping one for in when it has the same topic, and says
// how many it took out by topic.
func (fx *fuzzFixture) dropLate(in fuzzInput, msgs []*jetstream.RawStreamMsg) ([]*jetstream.RawStreamMsg, map[string]int) {
	used := map[string]int{}
	out := msgs[:0:0]
	own := 0
	for _, m := range msgs {
		topic := m.Header.Get("Nr-Topic")
		if topic == in.topic || topic == strconv.QuoteToASCII(in.topic) {
			own++
			if own > 1 && used[in.topic] < fx.late[in.topic] {
				used[in.topic]++
				continue
			}
			out = append(out, m)
			continue
		}
		if used[topic] < fx.late[topic] {
			used[topic]++
			continue
		}
		out = append(out, m)
	}
	return out, used
}

// checkMsg checks the one message an input became.
func (fx *fuzzFixture) checkMsg(t *testing.T, desc string, in fuzzInput, m *jetstream.RawStreamMsg) {
	t.Helper()
	if strings.HasPrefix(m.Subject, "nr.dlq.") {
		if m.Header.Get("Nr-Error") == "" || m.Header.Get("Nr-Topic") == "" {
			t.Errorf("%s: dead letter on %s without Nr-Error or Nr-Topic: %v", desc, m.Subject, headerNames(m.Header))
		}
		return
	}
	want := "nr.org." + in.org + ".node." + in.node + "." + in.kind
	if m.Subject != want {
		t.Errorf("%s: stored on %s, want %s", desc, m.Subject, want)
	}
	for name, vs := range m.Header {
		if len(name) >= 5 && strings.EqualFold(name[:5], "nats-") && name != "Nats-Msg-Id" {
			t.Errorf("%s: stored with header %s: %q", desc, name, vs)
		}
	}
	got := m.Header.Values("Nats-Msg-Id")
	switch want := in.org + "/" + in.node + "/" + in.msgID; {
	case in.msgID != "" && (len(got) != 1 || got[0] != want):
		t.Errorf("%s: Nats-Msg-Id %q, want [%s]", desc, got, want)
	case in.msgID == "" && len(got) != 0:
		t.Errorf("%s: Nats-Msg-Id %q, want none (no msg_id)", desc, got)
	}
	var ct []string
	for name, vs := range m.Header {
		if strings.EqualFold(name, "Content-Type") {
			ct = append(ct, vs...)
		}
	}
	switch {
	case in.contentType == "" && len(ct) != 0:
		t.Errorf("%s: Content-Type %q, want none (the publish had no content type)", desc, ct)
	case in.contentType != "" && (len(ct) != 1 || ct[0] != in.contentType):
		t.Errorf("%s: Content-Type %q, want [%s]", desc, ct, in.contentType)
	}
	if got := m.Header.Values("Nr-Org"); len(got) != 1 || got[0] != in.org {
		t.Errorf("%s: Nr-Org %q, want [%s]", desc, got, in.org)
	}
	if !bytes.Equal(m.Data, in.payload) {
		t.Errorf("%s: payload of %d bytes stored as %d bytes", desc, len(in.payload), len(m.Data))
	}
}

func headerNames(h nats.Header) []string {
	var out []string
	for k := range h {
		out = append(out, k)
	}
	return out
}
