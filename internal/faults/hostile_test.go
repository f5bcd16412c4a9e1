//go:build faults

package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// hostileCase is one case of issue 12's hostile-input suite.
type hostileCase struct {
	name string
	run  func(e *hostileEnv)
}

var hostileCases = []hostileCase{
	{"1-nats-control-headers", hostileControlHeaders},
	{"2-content-type-nr-headers", hostileReservedHeaders},
	{"3-headers-too-large", hostileHugeHeaders},
	{"4-dedupe-scope", hostileDedupeScope},
	{"5-command-key-case", hostileCommandKeys},
	{"6-near-limit-command", hostileNearLimitCommand},
	{"7-hostile-reply", hostileReply},
	{"8-invalid-ids-oversize", hostileInvalidIDs},
}

// TestHostile is issue 12's hostile-input suite: every case on both
// backbones, each with its own Mosquitto, backbone and nr-bridge binary
// (2 workers x 20 in flight). For every case the poison is sent first and
// then good traffic, more than every worker's window together; every
// poison message must be found, stored or dead-lettered with its reason,
// and all the good traffic must arrive. Each case prints one line:
//
//	hostile=<backbone>/<case> PASS|FAIL sent=N stored=N dead_lettered=N good=A/S time=<dur> reasons="..." note="..."
//
// Cases run two at a time (go test -parallel).
func TestHostile(t *testing.T) {
	bridgeBinary(t, false) // build once, before the parallel cases
	for _, backbone := range []string{"nats", "kafka"} {
		t.Run(backbone, func(t *testing.T) {
			for _, c := range hostileCases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					e := newHostileEnv(t, backbone, c.name)
					defer e.finish()
					c.run(e)
				})
			}
		})
	}
}

// isNATS reports whether the case runs on NATS.
func (e *hostileEnv) isNATS() bool { return e.bb.Name() == "nats" }

// checkNoBackboneHeaders fails when m carries a header a node must never
// set: any Nats-* (but the bridge's own dedupe header on NATS).
func (e *hostileEnv) checkNoBackboneHeaders(what string, m bbMsg) {
	e.t.Helper()
	for _, h := range m.Header {
		if len(h[0]) >= 5 && strings.EqualFold(h[0][:5], "nats-") && h[0] != e.bb.DedupeHeader() {
			e.t.Errorf("%s: stored with header %s: %q (a node's user property must not become a backbone header)", what, h[0], h[1])
			e.res.Note = join(e.res.Note, fmt.Sprintf("%s kept %s", what, h[0]))
		}
	}
}

// hostileControlHeaders: events with JetStream control headers as user
// properties, in mixed case, five in front of the good traffic. All are
// stored without those headers; after a restart of the bridge (same
// client ID) nothing stalls.
func hostileControlHeaders(e *hostileEnv) {
	props := [][]string{
		{"Nats-Expected-Stream", "NOPE", "nats-expected-stream", "NOPE"},
		{"Nats-Expected-Last-Sequence", "1"},
		{"Nats-Expected-Last-Subject-Sequence", "1"},
		{"Nats-Expected-Last-Msg-Id", "x"},
		{"Nats-Rollup", "all", "NATS-ROLLUP", "all"},
	}
	want := map[string]func(bbMsg) bool{}
	for i, p := range props {
		topic := fmt.Sprintf("org/acme/node/c1n%d/events", i+1)
		kv := append([]string{"msg_id", fmt.Sprintf("m%d", i+1), "site", "lyon"}, p...)
		e.publish(topic, fmt.Appendf(nil, `{"poison":%d}`, i+1), userProps(kv...))
		want[topic] = byTopic(topic)
	}
	e.waitGood(e.sendGood("before-restart"))
	found := e.find(want)

	// Same client ID: the broker resumes the workers' sessions.
	if code := e.b.stop(syscall.SIGTERM); code != 0 {
		e.t.Errorf("exit code after SIGTERM = %d", code)
	}
	e.b.start()
	e.waitGood(e.sendGood("after-restart"))
	after := e.findNow(want)
	for topic := range want {
		if len(after[topic][destEvents]) > len(found[topic][destEvents]) {
			found[topic] = after[topic]
		}
	}
	for _, topic := range slices.Sorted(maps.Keys(want)) {
		f := found[topic]
		e.tally(f)
		if n, dl := len(f[destEvents]), len(f[destDLQ]); n != 1 || dl != 0 {
			e.t.Errorf("%s: stored %d times and dead-lettered %d times (%v), want stored once", topic, n, dl, reasons(f[destDLQ]))
		}
		for _, m := range f[destEvents] {
			e.checkNoBackboneHeaders(topic, m)
			if got := m.values("site"); !slices.Equal(got, []string{"lyon"}) {
				e.t.Errorf("%s: user property site = %q, want [lyon]", topic, got)
			}
		}
	}
}

// hostileReservedHeaders: Content-Type and Nr-* user properties. The
// messages are stored; Content-Type is the MQTT content type (none when
// the publish has none), Nr-Org and Nr-Topic are the bridge's own.
func hostileReservedHeaders(e *hostileEnv) {
	withCT := "org/acme/node/c2a/events"
	noCT := "org/acme/node/c2b/events"
	e.publish(withCT, []byte(`{"c":"a"}`), &paho.PublishProperties{
		ContentType: "application/json",
		User: []paho.UserProperty{
			{Key: "msg_id", Value: "c2a"},
			{Key: "Content-Type", Value: "text/evil"},
			{Key: "CONTENT-TYPE", Value: "text/evil2"},
			{Key: "Nr-Org", Value: "evil"},
			{Key: "nr-topic", Value: "org/evil/node/x/events"},
		},
	})
	e.publish(noCT, []byte(`{"c":"b"}`), &paho.PublishProperties{
		User: []paho.UserProperty{
			{Key: "msg_id", Value: "c2b"},
			{Key: "content-type", Value: "text/evil"},
			{Key: "NR-ORG", Value: "evil"},
			{Key: "Nr-Node", Value: "evil"},
		},
	})
	e.waitGood(e.sendGood("after"))
	found := e.find(map[string]func(bbMsg) bool{withCT: byTopic(withCT), noCT: byTopic(noCT)})
	for topic, wantCT := range map[string][]string{withCT: {"application/json"}, noCT: nil} {
		f := found[topic]
		e.tally(f)
		if n, dl := len(f[destEvents]), len(f[destDLQ]); n != 1 || dl != 0 {
			e.t.Errorf("%s: stored %d times and dead-lettered %d times (%v), want stored once", topic, n, dl, reasons(f[destDLQ]))
		}
		node := strings.Split(topic, "/")[3]
		for _, m := range f[destEvents] {
			checks := []struct {
				name string
				want []string
			}{
				{"Content-Type", wantCT},
				{"Nr-Org", []string{"acme"}},
				{"Nr-Node", []string{node}},
				{"Nr-Topic", []string{topic}},
			}
			for _, c := range checks {
				if got := m.values(c.name); !slices.Equal(got, c.want) {
					e.t.Errorf("%s: header %s (any case) = %q, want %q", topic, c.name, got, c.want)
					e.res.Note = join(e.res.Note, fmt.Sprintf("%s %s=%q", node, c.name, got))
				}
			}
		}
	}
}

// hostileHugeHeaders: a 12-byte payload with 300 user properties of
// 4,000 bytes (1.2 MB of headers, over both backbones' limits), on a valid
// topic and on one whose org is invalid (a dead letter from the start).
// Both are dead-lettered with Nr-Error and Nr-Topic, and the dead letters
// fit.
func hostileHugeHeaders(e *hostileEnv) {
	payload := []byte("hdr-payload!")
	value := strings.Repeat("v", 4000)
	want := map[string]func(bbMsg) bool{}
	for i, topic := range []string{"org/acme/node/c3/events", "org/bad.org/node/c3/events"} {
		props := &paho.PublishProperties{User: []paho.UserProperty{{Key: "msg_id", Value: fmt.Sprintf("c3-%d", i)}}}
		for i := range 300 {
			props.User = append(props.User, paho.UserProperty{Key: fmt.Sprintf("p%03d", i), Value: value})
		}
		e.publish(topic, payload, props)
		want[topic] = byTopic(topic)
	}
	e.waitGood(e.sendGood("after"))
	found := e.find(want)
	for _, topic := range slices.Sorted(maps.Keys(want)) {
		f := found[topic]
		e.tally(f)
		if n, dl := len(f[destEvents]), len(f[destDLQ]); n != 0 || dl != 1 {
			e.t.Errorf("%s: stored %d times and dead-lettered %d times, want dead-lettered once", topic, n, dl)
		}
		for _, m := range f[destDLQ] {
			if m.get("Nr-Error") == "" {
				e.t.Errorf("%s: dead letter without Nr-Error (headers %v)", topic, m.names())
			}
			if !bytes.Equal(m.Data, payload) {
				e.t.Errorf("%s: dead letter payload %q, want %q", topic, m.Data, payload)
			}
		}
	}
}

// hostileDedupeScope: the same msg_id from two orgs' nodes within the
// dedupe window. Both are stored, each with its own dedupe ID.
func hostileDedupeScope(e *hostileEnv) {
	a, b := "org/tenantA/node/x/events", "org/tenantB/node/v/events"
	e.publish(a, []byte(`{"tenant":"A"}`), userProps("msg_id", "K"))
	e.publish(b, []byte(`{"tenant":"B"}`), userProps("msg_id", "K"))
	e.waitGood(e.sendGood("after"))
	found := e.find(map[string]func(bbMsg) bool{a: byTopic(a), b: byTopic(b)})
	for topic, want := range map[string]string{a: "tenantA/x/K", b: "tenantB/v/K"} {
		f := found[topic]
		e.tally(f)
		if n := len(f[destEvents]); n != 1 {
			e.t.Errorf("%s msg_id K: stored %d times, want once (another org's message with the same msg_id must not suppress it)", topic, n)
			e.res.Note = join(e.res.Note, fmt.Sprintf("%s stored %d times", topic, n))
		}
		for _, m := range f[destEvents] {
			if got := m.values(e.bb.DedupeHeader()); !slices.Equal(got, []string{want}) {
				e.t.Errorf("%s: %s = %q, want [%s]", topic, e.bb.DedupeHeader(), got, want)
				e.res.Note = join(e.res.Note, fmt.Sprintf("%s=%q", e.bb.DedupeHeader(), got))
			}
		}
	}
}

// hostileCommandBodies are command bodies with a key equal to a field name
// ignoring case, written with a JSON escape, or given twice, by
// correlation ID.
func hostileCommandBodies(prefix string) map[string][]byte {
	now := time.Now().Unix()
	return map[string][]byte{
		prefix + "-case": cmdDoc(prefix+"-case", `,"TYPE":"factory-reset","Payload":{"wipe":true}`),
		prefix + "-escaped": fmt.Appendf(nil, `{"\u0054YPE":"factory-reset","type":"ping","version":1,"correlation_id":%q,"issued_at":%d,"ttl_sec":120,"payload":{}}`,
			prefix+"-escaped", now),
		prefix + "-duplicate": cmdDoc(prefix+"-duplicate", `,"type":"factory-reset"`),
	}
}

// cmdDLQ returns the command dead letters of the DLQ by correlation ID
// (the body's, else the whole body).
func (e *hostileEnv) cmdDLQ() map[string][]bbMsg {
	out := map[string][]bbMsg{}
	for _, m := range e.bb.Read(e.t, destDLQ) {
		if m.get("Nr-Subject") == "" && m.get("Nr-Source-Topic") == "" {
			continue // an event or reply
		}
		var doc struct {
			CorrelationID string `json:"correlation_id"`
		}
		key := string(m.Data)
		if json.Unmarshal(m.Data, &doc) == nil && doc.CorrelationID != "" {
			key = doc.CorrelationID
		}
		out[key] = append(out[key], m)
	}
	return out
}

// hostileCommandKeys: command bodies with "TYPE"/"Payload" beside the
// real fields, an escaped "\u0054YPE", and a duplicate "type": 422 naming
// the field over HTTP, dead-lettered from the commands stream, and never
// published to the node; good commands after them are published.
func hostileCommandKeys(e *hostileEnv) {
	node := subscribeCommands(e.t, e.mq.URL(), "node-n1-"+e.bb.Name(), "org/acme/node/n1/cmd")
	var httpOutcomes []string
	httpBodies := hostileCommandBodies("c5-http")
	for _, id := range slices.Sorted(maps.Keys(httpBodies)) {
		// Refused with 422, never accepted: not counted as sent (the
		// note gives each answer).
		code, doc := e.postCommand("/org/acme/node/n1/cmd", httpBodies[id])
		field, _ := doc["field"].(string)
		msg, _ := doc["error"].(string)
		httpOutcomes = append(httpOutcomes, fmt.Sprintf("%s: %d field=%q", strings.TrimPrefix(id, "c5-http-"), code, field))
		if code != 422 || (field != "type" && field != "payload") || msg == "" {
			e.t.Errorf("POST %s: %d %v, want 422 with an error and field type or payload", id, code, doc)
		}
	}
	e.res.GoodSent++
	if code, doc := e.postCommand("/org/acme/node/n1/cmd", cmdDoc("c5-http-good", "")); code != 202 {
		e.t.Errorf("POST good command: %d %v, want 202", code, doc)
	}

	streamBodies := hostileCommandBodies("c5-stream")
	for _, id := range slices.Sorted(maps.Keys(streamBodies)) {
		e.res.Sent++
		if err := e.bb.SendCommand(e.t, "org/acme/node/n1", nil, streamBodies[id], nil); err != nil {
			e.t.Fatalf("write command %s: %v", id, err)
		}
	}
	e.res.GoodSent++
	if err := e.bb.SendCommand(e.t, "org/acme/node/n1", nil, cmdDoc("c5-stream-good", ""), nil); err != nil {
		e.t.Fatalf("write good command: %v", err)
	}
	for _, id := range []string{"c5-http-good", "c5-stream-good"} {
		if node.waitFor(id) {
			e.res.GoodArrived++
		} else {
			e.t.Errorf("good command %s not published to the node within %v", id, hostileWait)
		}
	}
	// Every stream command is either dead-lettered or published: wait for
	// that, rather than for nothing to happen.
	var dlq map[string][]bbMsg
	deadline := time.Now().Add(hostileWait)
	for {
		dlq = e.cmdDLQ()
		got := map[string]bool{}
		for _, id := range node.received() {
			got[id] = true
		}
		done := true
		for id := range streamBodies {
			done = done && (len(dlq[id]) > 0 || got[id])
		}
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, id := range node.received() {
		if strings.HasPrefix(id, "c5-") && !strings.HasSuffix(id, "-good") {
			e.res.Stored++
			e.t.Errorf("command %s was published to the node", id)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(streamBodies)) {
		e.tally(map[string][]bbMsg{destDLQ: dlq[id]})
		if len(dlq[id]) != 1 {
			e.t.Errorf("stream command %s: dead-lettered %d times, want once", id, len(dlq[id]))
		}
		for _, m := range dlq[id] {
			reason := strings.ToLower(m.get("Nr-Error"))
			if !strings.Contains(reason, "type") && !strings.Contains(reason, "payload") {
				e.t.Errorf("stream command %s: Nr-Error %q does not name the field", id, m.get("Nr-Error"))
			}
		}
	}
	e.res.Note = join(e.res.Note, "HTTP: "+strings.Join(httpOutcomes, ", "))
}

// hostileNearLimitCommand: a command the dead letter of which would not
// fit as it is. NATS: a 1,048,500-byte non-JSON body on NR_COMMANDS.
// Kafka: a record with a 600,000-byte key, and one with a 1,000,000-byte
// header. Each is dead-lettered exactly once, the stream or partition
// settles (no redelivery loop, offset committed), and good commands
// behind it are published.
func hostileNearLimitCommand(e *hostileEnv) {
	node := subscribeCommands(e.t, e.mq.URL(), "node-n1-"+e.bb.Name(), "org/acme/node/n1/cmd")
	target := "org/acme/node/n1"
	want := map[string]func(bbMsg) bool{}
	if e.isNATS() {
		body := bytes.Repeat([]byte("x"), 1_048_500)
		e.res.Sent++
		if err := e.bb.SendCommand(e.t, target, nil, body, nil); err != nil {
			e.t.Fatalf("write the 1,048,500-byte command: %v", err)
		}
		want["1048500-byte body"] = func(m bbMsg) bool {
			return m.get("Nr-Subject") == "nr.org.acme.node.n1.cmd" && (len(m.Data) > 1000 || m.get("Nr-Original-Size") != "")
		}
	} else {
		bigKey := bytes.Repeat([]byte("k"), 600_000)
		e.res.Sent++
		if err := e.bb.SendCommand(e.t, target, bigKey, cmdDoc("c6-bigkey", ""), nil); err != nil {
			e.t.Fatalf("write the command with a 600,000-byte key: %v", err)
		}
		e.res.Sent++
		if err := e.bb.SendCommand(e.t, target, nil, []byte("not json c6-bighdr"),
			map[string][]byte{"big": bytes.Repeat([]byte("h"), 1_000_000)}); err != nil {
			e.t.Fatalf("write the command with a 1,000,000-byte header: %v", err)
		}
		want["600000-byte key"] = func(m bbMsg) bool {
			return m.get("Nr-Source-Topic") == "nr.commands" && strings.HasPrefix(m.get("Nr-Source-Key"), "kkkkkkkk")
		}
		want["1000000-byte header"] = func(m bbMsg) bool {
			return m.get("Nr-Source-Topic") == "nr.commands" && bytes.HasPrefix(m.Data, []byte("not json c6-bighdr"))
		}
	}
	goods := []string{"c6-good-1", "c6-good-2", "c6-good-3"}
	for _, id := range goods {
		e.res.GoodSent++
		if err := e.bb.SendCommand(e.t, target, nil, cmdDoc(id, ""), nil); err != nil {
			e.t.Fatalf("write good command %s: %v", id, err)
		}
	}
	if node.waitFor(goods...) {
		e.res.GoodArrived += len(goods)
	} else {
		got := node.received()
		for _, id := range goods {
			if slices.Contains(got, id) {
				e.res.GoodArrived++
			}
		}
		e.t.Errorf("good commands behind the poison: %d of %d published within %v", e.res.GoodArrived, len(goods), hostileWait)
	}
	found := e.find(want)

	settled, seen := false, ""
	deadline := time.Now().Add(hostileWait)
	for !settled && time.Now().Before(deadline) {
		if settled, seen = e.bb.CommandsSettled(e.t); !settled {
			time.Sleep(250 * time.Millisecond)
		}
	}
	e.res.Note = join(e.res.Note, seen)
	if !settled {
		e.t.Errorf("commands did not settle within %v: %s", hostileWait, seen)
	}
	// Read once more now that nothing is pending: exactly one dead letter
	// each, however long the source took.
	final := e.findNow(want)
	for _, name := range slices.Sorted(maps.Keys(want)) {
		f := final[name]
		if len(f[destDLQ]) < len(found[name][destDLQ]) {
			f = found[name]
		}
		e.tally(f)
		if n := len(f[destDLQ]); n != 1 {
			e.t.Errorf("%s: dead-lettered %d times, want exactly once", name, n)
		}
		for _, m := range f[destDLQ] {
			if m.get("Nr-Error") == "" {
				e.t.Errorf("%s: dead letter without Nr-Error (headers %v)", name, m.names())
			}
			if name == "600000-byte key" {
				// The record key is cut to 256 bytes; the original key
				// stays findable in Nr-Source-Key (cut only when the dead
				// letter would not fit otherwise) with its size.
				if got := m.get("Nr-Source-Key-Size"); got != "600000" {
					e.t.Errorf("%s: Nr-Source-Key-Size = %q, want 600000", name, got)
				}
				if k := m.get("Nr-Source-Key"); len(k) < 256 || k != strings.Repeat("k", len(k)) {
					e.t.Errorf("%s: Nr-Source-Key is %d bytes, want the key or its start", name, len(k))
				}
				if m.get("Nr-Source-Partition") != "0" || m.get("Nr-Source-Offset") == "" {
					e.t.Errorf("%s: origin headers Nr-Source-Partition=%q Nr-Source-Offset=%q", name,
						m.get("Nr-Source-Partition"), m.get("Nr-Source-Offset"))
				}
			}
		}
	}
}

// nested returns n nested JSON arrays.
func nested(n int) []byte {
	return append(bytes.Repeat([]byte("["), n), bytes.Repeat([]byte("]"), n)...)
}

// hostileReply: a tracked broadcast command is answered first by a node
// whose reply nests 10,000 arrays, then honestly by another node. The
// replies are stored or dead-lettered, and the command's status answers
// 200 with the honest reply, the hostile one in a safe form. (A status
// keeps one reply per node: MQTT may deliver a reply twice.)
func hostileReply(e *hostileEnv) {
	node := subscribeCommands(e.t, e.mq.URL(), "node-n7-"+e.bb.Name(), "org/acme/broadcast/cmd")
	if code, doc := e.postCommand("/org/acme/broadcast/cmd", cmdDoc("c7", "")); code != 202 {
		e.t.Fatalf("POST command c7: %d %v", code, doc)
	}
	if !node.waitFor("c7") {
		e.t.Fatalf("command c7 not received by the node within %v", hostileWait)
	}
	hostile := nested(10_000)
	honest := []byte(`{"ok":true}`)
	topic := "org/acme/node/n7/reply"
	reply := func(id string, payload []byte) {
		e.publish(topic, payload, &paho.PublishProperties{
			ContentType:     "application/json",
			CorrelationData: []byte("c7"),
			User:            []paho.UserProperty{{Key: "msg_id", Value: id}},
		})
	}
	reply("r7-hostile", hostile)
	fh := e.find(map[string]func(bbMsg) bool{"hostile reply": func(m bbMsg) bool {
		return m.get("Nr-Topic") == topic && bytes.HasPrefix(m.Data, []byte("[[[["))
	}})["hostile reply"]
	topic = "org/acme/node/n8/reply"
	reply("r7-honest", honest)
	fo := e.find(map[string]func(bbMsg) bool{"honest reply": func(m bbMsg) bool {
		return m.get("Nr-Topic") == topic && bytes.Equal(m.Data, honest)
	}})["honest reply"]
	e.tally(fh)
	e.tally(fo)
	e.waitGood(e.sendGood("after"))

	type statusDoc struct {
		Status  string `json:"status"`
		Replies []struct {
			Node          string          `json:"node"`
			Size          int             `json:"size"`
			Payload       json.RawMessage `json:"payload"`
			PayloadBase64 string          `json:"payload_base64"`
			Truncated     bool            `json:"truncated"`
		} `json:"replies"`
	}
	var code int
	var body []byte
	var doc statusDoc
	honestShown, hostileShown := false, false
	deadline := time.Now().Add(hostileWait)
	for !(honestShown && hostileShown) && time.Now().Before(deadline) {
		code, body = e.getStatus("acme", "c7")
		doc = statusDoc{}
		if code == 200 && json.Unmarshal(body, &doc) == nil {
			for _, r := range doc.Replies {
				var b bytes.Buffer
				if json.Compact(&b, r.Payload) == nil && bytes.Equal(b.Bytes(), honest) {
					honestShown = true
				}
				// Decoding the document above proves whatever form it
				// has is safe to read back.
				hostileShown = hostileShown || r.Size == len(hostile)
			}
		}
		if !(honestShown && hostileShown) {
			time.Sleep(200 * time.Millisecond)
		}
	}
	shown := fmt.Sprintf("GET status: %d", code)
	if code != 200 {
		shown += fmt.Sprintf(" %.200s", body)
	}
	for _, r := range doc.Replies {
		form := "payload"
		switch {
		case r.Truncated:
			form = "truncated"
		case r.PayloadBase64 != "":
			form = "base64"
		}
		shown += fmt.Sprintf("; reply size %d as %s", r.Size, form)
	}
	e.res.Note = join(e.res.Note, shown)
	if code != 200 {
		e.t.Errorf("GET /org/acme/commands/c7: %d %.300s, want 200", code, body)
	} else {
		if !honestShown {
			e.t.Errorf("GET /org/acme/commands/c7: the honest reply is not in the status: %.500s", body)
		}
		if !hostileShown {
			e.t.Errorf("GET /org/acme/commands/c7: the hostile reply (%d bytes) is not in the status: %.500s", len(hostile), body)
		}
	}
	if n := e.b.countLog("command status not recorded"); n > 0 {
		e.res.Note = join(e.res.Note, fmt.Sprintf("%d \"command status not recorded\" log lines", n))
	}
}

// hostileInvalidIDs: events on topics with invalid IDs, and a payload over
// the backbone's limit: all dead-lettered with the reason, the oversize
// one cut to fit with Nr-Original-Size. A topic with bytes that are not
// UTF-8 is refused by Mosquitto itself (MQTT-1.5.4-1) and never reaches
// the bridge; if a broker let it through it must be dead-lettered.
func hostileInvalidIDs(e *hostileEnv) {
	invalid := []string{
		"org/bad.org/node/x/events",
		"org/acme/node/" + strings.Repeat("n", 65) + "/events",
		"org/acme/node/n\u0153ud/events",
	}
	want := map[string]func(bbMsg) bool{}
	for i, topic := range invalid {
		e.publish(topic, fmt.Appendf(nil, `{"invalid":%d}`, i), userProps("msg_id", fmt.Sprintf("c8-%d", i)))
		want[topic] = byTopic(topic)
	}
	big := "org/acme/node/c8big/events"
	const bigSize = 1536 << 10
	e.publish(big, bytes.Repeat([]byte("b"), bigSize), userProps("msg_id", "c8-big"))
	want[big] = byTopic(big)

	// The non-UTF-8 topic from its own connection: Mosquitto closes it.
	badUTF8 := "org/acme/node/n\xff\xfe/events"
	c := connectMQTT(e.t, e.mq.URL(), "agent-badutf8-"+e.bb.Name(), mqttOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, err := c.cm.Publish(ctx, &paho.Publish{QoS: 1, Topic: badUTF8, Payload: []byte("x"),
		Properties: userProps("msg_id", "c8-badutf8")})
	cancel()
	outcome := "non-UTF-8 topic refused by the broker"
	if err == nil {
		outcome = "non-UTF-8 topic accepted by the broker"
		e.res.Sent++
		want[badUTF8] = byTopic(badUTF8)
	} else if !errors.Is(err, context.DeadlineExceeded) {
		outcome += ": " + err.Error()
	}
	e.res.Note = join(e.res.Note, outcome)

	e.waitGood(e.sendGood("after"))
	found := e.find(want)
	for _, topic := range slices.Sorted(maps.Keys(want)) {
		f := found[topic]
		e.tally(f)
		if n, dl := len(f[destEvents]), len(f[destDLQ]); n != 0 || dl != 1 {
			e.t.Errorf("%q: stored %d times and dead-lettered %d times, want dead-lettered once", topic, n, dl)
		}
		for _, m := range f[destDLQ] {
			reason := m.get("Nr-Error")
			if topic == big {
				if reason == "" {
					e.t.Errorf("%s: dead letter without Nr-Error", topic)
				}
				if got := m.get("Nr-Original-Size"); got != fmt.Sprint(bigSize) || len(m.Data) >= bigSize {
					e.t.Errorf("%s: dead letter of %d bytes with Nr-Original-Size %q, want it cut with %d", topic, len(m.Data), got, bigSize)
				}
				continue
			}
			if !strings.Contains(reason, "invalid id") {
				e.t.Errorf("%q: dead-lettered with Nr-Error %q, want an invalid id", topic, reason)
			}
		}
	}
}

// reasons lists the Nr-Error of dead letters.
func reasons(ms []bbMsg) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.get("Nr-Error"))
	}
	return out
}
