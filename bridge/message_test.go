package bridge

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

func headersOf(m *Message) [][2]string {
	var out [][2]string
	for _, h := range m.AppendHeaders(nil) {
		out = append(out, [2]string{h.Name, h.Value})
	}
	return out
}

func TestMessageHeaders(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.FixedZone("x", 3600))
	m := NewMessage("org/o1/node/n1/events", []byte("p"), at, "application/json", []byte("corr-1"), []Property{
		{"msg_id", "m-1"},
		{"site", "paris"},
		{"Nr-Org", "forged"},
		{"nr-topic", "forged"},
		{"site", "lyon"},
	})
	if m.DeadLetter != "" {
		t.Fatalf("DeadLetter = %q", m.DeadLetter)
	}
	if m.MsgID != "m-1" {
		t.Fatalf("MsgID = %q", m.MsgID)
	}
	want := [][2]string{
		{"Nr-Topic", "org/o1/node/n1/events"},
		{"Nr-Org", "o1"},
		{"Nr-Node", "n1"},
		{"Nr-Kind", "events"},
		{"Nr-Received-At", "2026-11-25T09:00:00.123456789Z"},
		{"Content-Type", "application/json"},
		{"Nr-Correlation-Data", "corr-1"},
		{"site", "paris"},
		{"site", "lyon"},
	}
	got := headersOf(m)
	if len(got) != len(want) {
		t.Fatalf("headers = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("header %d = %v, want %v (all %v)", i, got[i], want[i], got)
		}
	}
}

func TestMessageBinaryCorrelationData(t *testing.T) {
	m := NewMessage("org/o1/node/n1/reply", nil, time.Unix(0, 0), "", []byte{0xff, 0x00, 0x01}, nil)
	got := headersOf(m)
	var corr, enc string
	for _, h := range got {
		switch h[0] {
		case HeaderCorrelation:
			corr = h[1]
		case HeaderCorrelationEnc:
			enc = h[1]
		case HeaderContentType:
			t.Fatalf("empty content type must not be a header")
		}
	}
	if corr != "/wAB" || enc != "base64" {
		t.Fatalf("correlation = %q encoding = %q, want /wAB base64", corr, enc)
	}
}

func TestMessageDeadLetters(t *testing.T) {
	tests := []struct {
		name       string
		topic      string
		props      []Property
		wantKind   Kind
		wantReason string
	}{
		{"invalid org", "org/bad.org/node/n1/events", nil, KindEvents, `org id "bad.org": invalid id`},
		{"invalid node on reply", "org/o1/node/n$1/reply", nil, KindReply, `node id "n$1": invalid id`},
		{"invalid utf8 property", "org/o1/node/n1/events", []Property{{"k", "a\xffb"}}, KindEvents, `user property "k" has a value that is not printable UTF-8`},
		{"newline in property", "org/o1/node/n1/events", []Property{{"k", "a\r\nInjected: 1"}}, KindEvents, `user property "k"`},
		{"bad property name", "org/o1/node/n1/events", []Property{{"a b:c", "v"}}, KindEvents, `user property name "a b:c" cannot be a header name`},
		{"bad msg_id", "org/o1/node/n1/events", []Property{{"msg_id", "a\nb"}}, KindEvents, "msg_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMessage(tt.topic, []byte("x"), time.Now(), "", nil, tt.props)
			if !strings.Contains(m.DeadLetter, tt.wantReason) {
				t.Fatalf("DeadLetter = %q, want it to contain %q", m.DeadLetter, tt.wantReason)
			}
			if m.Kind != tt.wantKind {
				t.Fatalf("Kind = %q, want %q", m.Kind, tt.wantKind)
			}
			for _, h := range headersOf(m) {
				if !printableHeaderValue(h[1]) {
					t.Fatalf("header %s=%q is not printable", h[0], h[1])
				}
			}
			last := headersOf(m)[len(headersOf(m))-1]
			if last[0] != HeaderError {
				t.Fatalf("last header %v, want Nr-Error", last)
			}
		})
	}
}

func BenchmarkNewMessageHeaders(b *testing.B) {
	props := []Property{{"msg_id", "o1.n1.42"}, {"fw", "1.2.3"}}
	payload := make([]byte, 256)
	b.ReportAllocs()
	for b.Loop() {
		m := NewMessage("org/o1/node/n1/events", payload, time.Now(), "application/json", []byte("c"), props)
		var buf [12]Header
		_ = m.AppendHeaders(buf[:0])
	}
}

// TestDeadLetterReasonHeader: every dead letter carries its reason label
// (Nr-Reason) beside the reason text (Nr-Error), so readers of the
// dead-letter stream need no second classifier of the text.
func TestDeadLetterReasonHeader(t *testing.T) {
	at := time.Unix(0, 0)
	for _, tc := range []struct {
		name string
		m    *Message
		want string
	}{
		{"bad org", NewMessage("org/bad.org/node/n1/events", nil, at, "", nil, nil), ReasonInvalidID},
		{"not a node topic", NewMessage("org/o/x", nil, at, "", nil, nil), ReasonOther},
		{"property", NewMessage("org/o/node/n/events", nil, at, "", nil, []Property{{"bad\nname", "v"}}), ReasonInvalidProperty},
		{"set later", func() *Message {
			m := NewMessage("org/o/node/n/events", nil, at, "", nil, nil)
			m.DeadLetter, m.Reason = "poison", ReasonPoison
			return m
		}(), ReasonPoison},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]string{}
			for _, h := range headersOf(tc.m) {
				got[h[0]] = h[1]
			}
			if got[HeaderReason] != tc.want || got[HeaderError] == "" {
				t.Fatalf("Nr-Reason %q Nr-Error %q, want reason %q: %v", got[HeaderReason], got[HeaderError], tc.want, headersOf(tc.m))
			}
		})
	}
	for _, h := range headersOf(NewMessage("org/o/node/n/events", nil, at, "", nil, nil)) {
		if h[0] == HeaderReason || h[0] == HeaderError {
			t.Fatalf("a message that is no dead letter has %s", h[0])
		}
	}
}

// FittedDeadLetter cuts headers to the header limit and the whole to the
// total limit, counts every dropped header once, keeps the dedupe header,
// and with MinimalDeadLetter keeps only the bridge's own short headers.
func TestFittedDeadLetter(t *testing.T) {
	props := []Property{{MsgIDProperty, "K"}}
	big := strings.Repeat("v", 4000)
	for i := range 300 {
		props = append(props, Property{fmt.Sprintf("p%03d", i), big})
	}
	m := NewMessage("org/acme/node/n1/events", make([]byte, 2<<20), time.Now(), "application/json", nil, props)
	m.DeadLetter = "too large"
	get := func(hs []Header, name string) (string, int) {
		v, n := "", 0
		for _, h := range hs {
			if h.Name == name {
				v, n = h.Value, n+1
			}
		}
		return v, n
	}
	hs, p := m.FittedDeadLetter("Nats-Msg-Id", 1<<20, 64<<10)
	if size := headersSize(hs) + len(p); size > 1<<20 || headersSize(hs) > 64<<10 {
		t.Fatalf("size %d, headers %d", size, headersSize(hs))
	}
	kept := 0
	for _, h := range hs {
		if strings.HasPrefix(h.Name, "p") {
			kept++
		}
	}
	if v, n := get(hs, HeaderDroppedHeaders); n != 1 || v != strconv.Itoa(301-kept) { // 300 properties and Content-Type
		t.Errorf("Nr-Dropped-Headers %q (%d times), %d properties kept", v, n, kept)
	}
	if v, _ := get(hs, HeaderOriginalSize); v != strconv.Itoa(2<<20) || len(p) == 0 {
		t.Errorf("Nr-Original-Size %q, payload %d", v, len(p))
	}
	if hs[len(hs)-1] != (Header{"Nats-Msg-Id", "acme/n1/K"}) {
		t.Errorf("last header %v, want the dedupe ID", hs[len(hs)-1])
	}

	m.MinimalDeadLetter = true
	hs, p = m.FittedDeadLetter("Nats-Msg-Id", 1<<20, 64<<10)
	if len(p) != 0 {
		t.Errorf("minimal dead letter keeps %d payload bytes", len(p))
	}
	for _, h := range hs {
		if !ownHeader(h.Name) || len(h.Value) > minKeptValue {
			t.Errorf("minimal dead letter has %s (%d bytes)", h.Name, len(h.Value))
		}
	}
	if v, _ := get(hs, HeaderError); v != "too large" {
		t.Errorf("Nr-Error %q", v)
	}
	if v, _ := get(hs, HeaderDroppedHeaders); v != "301" {
		t.Errorf("Nr-Dropped-Headers %q, want 301", v)
	}
}
