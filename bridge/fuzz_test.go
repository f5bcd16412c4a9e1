package bridge

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// checkParsedTarget holds for every target ParseCommandSubject or
// ParseCommandKey accepted: valid IDs, and a topic, subject and key that
// read back to the same target and carry no wildcard, separator or NUL.
func checkParsedTarget(t *testing.T, input string, got Target) {
	t.Helper()
	if err := got.Validate(); err != nil {
		t.Fatalf("accepted %q as %+v, which does not validate: %v", input, got, err)
	}
	if strings.ContainsAny(got.MQTTTopic(), "+#$\x00 .") {
		t.Fatalf("%q gives MQTT topic %q", input, got.MQTTTopic())
	}
	if back, err := ParseCommandSubject("nr", got.Subject("nr")); err != nil || back != got {
		t.Fatalf("%q: subject %q reads back as %+v, %v", input, got.Subject("nr"), back, err)
	}
	if back, err := ParseCommandKey(got.Key()); err != nil || back != got {
		t.Fatalf("%q: key %q reads back as %+v, %v", input, got.Key(), back, err)
	}
}

// checkTargetError holds for every input they refused.
func checkTargetError(t *testing.T, input string, got Target, err error) {
	t.Helper()
	if !errors.Is(err, ErrInvalidTarget) {
		t.Fatalf("error %v for %q does not match ErrInvalidTarget", err, input)
	}
	if got != (Target{}) {
		t.Fatalf("%q returned %+v with an error", input, got)
	}
	if !strings.Contains(err.Error(), strconv.Quote(input)) {
		t.Fatalf("error %q does not quote %q", err, input)
	}
}

func FuzzParseCommandSubject(f *testing.F) {
	for _, s := range []string{
		"nr.org.o1.node.n1.cmd", "nr.org.o1.broadcast.cmd", "nr.org.o1.node..cmd", "nr.org..broadcast.cmd",
		"nr.org.o1.node.n1.reply", "nr.org.*.node.>.cmd", "nr.org.o$1.node.n1.cmd", "nr.org.o1.node.n1.cmd.x",
		"nrx.org.o1.node.n1.cmd", "nr.org.o1.node.n\x00.cmd", "nr.org.ö.node.n1.cmd", "",
		"nr.org." + strings.Repeat("a", 65) + ".broadcast.cmd",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		got, err := ParseCommandSubject("nr", subject)
		if err != nil {
			checkTargetError(t, subject, got, err)
			return
		}
		checkParsedTarget(t, subject, got)
		if got.Subject("nr") != subject {
			t.Fatalf("round trip %q -> %q", subject, got.Subject("nr"))
		}
	})
}

func FuzzParseCommandKey(f *testing.F) {
	for _, s := range []string{
		"org/o1/node/n1", "org/o1/broadcast", "org/o1/node/", "org//broadcast", "org/o1/node/n1/cmd",
		"org/+/node/#", "org/o1/node/n/1", "/org/o1/node/n1", "org/o.1/node/n1", "org/o1/node/n\xff", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		got, err := ParseCommandKey(key)
		if err != nil {
			checkTargetError(t, key, got, err)
			return
		}
		checkParsedTarget(t, key, got)
		if got.Key() != key {
			t.Fatalf("round trip %q -> %q", key, got.Key())
		}
	})
}

// FuzzNewMessage feeds NewMessage what an MQTT v5 PUBLISH can carry: a
// topic, a payload, a content type, correlation data and user properties.
// Whatever arrives, the message keeps its payload byte for byte, and every
// header the sinks write is a valid header name with a printable one-line
// value, so neither NATS nor Kafka can refuse it or be confused by it
// (a CR or LF would end a NATS header line), and a node cannot forge the
// bridge's Nr- headers.
func FuzzNewMessage(f *testing.F) {
	f.Add("org/o1/node/n1/events", []byte(`{"t":1}`), "application/json", []byte("corr-1"), "msg_id", "m-1", "site", "paris")
	f.Add("org/o1/node/n1/reply", []byte{0, 0xff}, "", []byte{0xff, 0}, "Nr-Org", "forged", "nr-topic", "x")
	f.Add("org/bad.org/node/n1/events", []byte("x"), "text/plain\r\nX: y", []byte(nil), "msg_id", "has space", "bad name", "v")
	f.Add("org/o1/node/$x/events", []byte(""), "a", []byte(""), "site", "ly\xffon", "k", "line\nbreak")
	f.Add("org/o1/node/n1/x", []byte("x"), "", []byte("ok"), "msg_id", strings.Repeat("a", 5000), "", "")
	f.Add("org//node//events", []byte("x"), "\x00", []byte("\x01"), "Nr-Error", "forged", "msg_id", "")
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, topic string, payload []byte, contentType string, corr []byte, n1, v1, n2, v2 string) {
		in := bytes.Clone(payload)
		props := []Property{{n1, v1}, {n2, v2}}
		m := NewMessage(topic, payload, at, contentType, corr, props)
		if !bytes.Equal(m.Payload, in) || !bytes.Equal(payload, in) {
			t.Fatal("the payload changed")
		}
		if m.Kind != KindEvents && m.Kind != KindReply {
			t.Fatalf("kind %q", m.Kind)
		}
		counts := map[string]int{}
		for _, h := range m.AppendHeaders(nil) {
			name, value := h.Name, h.Value
			if !validHeaderName(name) {
				t.Fatalf("header name %q", name)
			}
			if !printableHeaderValue(value) {
				t.Fatalf("header %s: value %q is not printable", name, value)
			}
			counts[strings.ToLower(name)]++
		}
		for _, h := range []string{HeaderTopic, HeaderOrg, HeaderNode, HeaderKind, HeaderReceivedAt, HeaderError, HeaderCorrelation} {
			if counts[strings.ToLower(h)] > 1 {
				t.Fatalf("%d %s headers: forged", counts[strings.ToLower(h)], h)
			}
		}
		if (counts[strings.ToLower(HeaderError)] == 1) != (m.DeadLetter != "") {
			t.Fatalf("Nr-Error header and DeadLetter %q disagree", m.DeadLetter)
		}
		if m.DeadLetter != "" {
			return
		}
		nt, err := ParseNodeTopic(topic)
		if err != nil {
			t.Fatalf("forwarded a message on topic %q: %v", topic, err)
		}
		if nt.Org != m.Org || nt.Node != m.Node || nt.Kind != m.Kind {
			t.Fatalf("message %+v, topic %+v", m, nt)
		}
		if m.MsgID != "" && strings.ContainsAny(m.MsgID, " \r\n") {
			t.Fatalf("msg_id %q", m.MsgID)
		}
		for _, p := range m.Properties {
			if strings.HasPrefix(strings.ToLower(p.Name), "nr-") || p.Name == MsgIDProperty {
				t.Fatalf("property %q kept", p.Name)
			}
		}
	})
}
