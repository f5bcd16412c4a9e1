package bridge

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestFitDeadLetter(t *testing.T) {
	big := strings.Repeat("x", 4000)
	props := func(n int) []Header {
		hs := []Header{{HeaderTopic, "org/a/node/n/events"}, {HeaderError, "too large"}}
		for i := range n {
			hs = append(hs, Header{"p" + strconv.Itoa(i), big})
		}
		return hs
	}
	tests := []struct {
		name        string
		headers     []Header
		payload     int
		limit       int
		wantPayload int
		wantDropped string // Nr-Dropped-Headers, "" when absent
		wantOrig    string // Nr-Original-Size, "" when absent
	}{
		{name: "fits as is", headers: props(2), payload: 100, limit: 1 << 20, wantPayload: 100},
		{name: "payload cut", headers: props(0), payload: 2 << 20, limit: 1 << 20,
			wantPayload: 1<<20 - headersSize(props(0)) - fitReserve, wantOrig: strconv.Itoa(2 << 20)},
		{name: "user headers dropped first", headers: props(300), payload: 12, limit: 1 << 20,
			wantPayload: 12, wantDropped: "40"},
		{name: "headers dropped and payload cut", headers: props(300), payload: 2 << 20, limit: 1 << 20,
			wantPayload: 1<<20 - headersSize(props(0)) - fitReserve, wantDropped: "300", wantOrig: strconv.Itoa(2 << 20)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs, p := FitDeadLetter(tc.headers, make([]byte, tc.payload), tc.limit)
			if size := headersSize(hs) + len(p); size > tc.limit {
				t.Fatalf("size %d over limit %d", size, tc.limit)
			}
			if len(p) != tc.wantPayload {
				t.Errorf("payload %d bytes, want %d", len(p), tc.wantPayload)
			}
			got := map[string]string{}
			for _, h := range hs {
				got[h.Name] = h.Value
			}
			if got[HeaderError] != "too large" || got[HeaderTopic] != "org/a/node/n/events" {
				t.Errorf("own headers changed: %v / %v", got[HeaderError], got[HeaderTopic])
			}
			if got[HeaderDroppedHeaders] != tc.wantDropped {
				t.Errorf("%s = %q, want %q", HeaderDroppedHeaders, got[HeaderDroppedHeaders], tc.wantDropped)
			}
			if got[HeaderOriginalSize] != tc.wantOrig {
				t.Errorf("%s = %q, want %q", HeaderOriginalSize, got[HeaderOriginalSize], tc.wantOrig)
			}
		})
	}
}

// A dead letter whose own headers are huge (a 600,000-byte Kafka key copied
// into Nr-Source-Key) still fits: their values are shortened, never removed.
func TestFitDeadLetterShortensOwnHeaders(t *testing.T) {
	key := strings.Repeat("k", 600_000)
	in := []Header{{HeaderError, "invalid target"}, {"Nr-Source-Key", key}, {"Nr-Source-Offset", "7"}}
	hs, p := FitDeadLetter(in, []byte(`{"type":"x"}`), 64<<10)
	if size := headersSize(hs) + len(p); size > 64<<10 {
		t.Fatalf("size %d over limit", size)
	}
	if len(hs) != 4 || hs[0].Value != "invalid target" || hs[2].Value != "7" || hs[3] != (Header{HeaderOriginalSize, "12"}) {
		t.Fatalf("%d headers, want Nr-Error, Nr-Source-Key, Nr-Source-Offset, Nr-Original-Size 12", len(hs))
	}
	if n := len(hs[1].Value); n < minKeptValue || n >= len(key) {
		t.Fatalf("Nr-Source-Key cut to %d bytes", n)
	}
	if in[1].Value != key {
		t.Fatal("input headers modified")
	}
	// The payload went first.
	if len(p) != 0 {
		t.Fatalf("payload %q kept while a header was cut", p)
	}
}

// A dead letter cut once (Nr-Original-Size set) and cut again keeps the
// first original size.
func TestFitDeadLetterKeepsFirstOriginalSize(t *testing.T) {
	in := []Header{{HeaderError, "e"}, {HeaderOriginalSize, "5000000"}}
	hs, p := FitDeadLetter(in, make([]byte, 2000), 1000)
	if len(p) >= 2000 {
		t.Fatal("not cut")
	}
	if hs[len(hs)-1].Name != HeaderOriginalSize || hs[len(hs)-1].Value != "5000000" {
		t.Fatalf("headers %v", hs)
	}
}

func TestReasonLine(t *testing.T) {
	got := ReasonLine(errors.New("bad\r\nNats-Rollup: all\x00\xff" + strings.Repeat("é", 600)))
	if strings.ContainsAny(got, "\r\n\x00") || !utf8.ValidString(got) || len(got) > maxReasonLen {
		t.Fatalf("ReasonLine = %q (%d bytes)", got, len(got))
	}
	if !strings.HasPrefix(got, "bad  Nats-Rollup: all") {
		t.Fatalf("ReasonLine = %q", got[:40])
	}
}

func TestDedupeIDScopedToNode(t *testing.T) {
	now := time.Time{}
	a := NewMessage("org/tenantA/node/x/events", nil, now, "", nil, []Property{{MsgIDProperty, "K"}})
	b := NewMessage("org/tenantB/node/v/events", nil, now, "", nil, []Property{{MsgIDProperty, "K"}})
	bad := NewMessage("org/bad.org/node/v/events", nil, now, "", nil, []Property{{MsgIDProperty, "K"}})
	none := NewMessage("org/a/node/v/events", nil, now, "", nil, nil)
	for _, tc := range []struct{ got, want string }{
		{a.DedupeID(), "tenantA/x/K"}, {b.DedupeID(), "tenantB/v/K"},
		{bad.DedupeID(), "org/bad.org/node/v/events/K"}, {none.DedupeID(), ""},
	} {
		if tc.got != tc.want {
			t.Errorf("DedupeID = %q, want %q", tc.got, tc.want)
		}
	}
}

func TestReservedPropertiesDropped(t *testing.T) {
	props := []Property{
		{"Nats-Expected-Stream", "NOPE"}, {"nats-rollup", "all"}, {"NATS-EXPECTED-LAST-SEQUENCE", "1"},
		{"Nats-Msg-Id", "forged"}, {"nr-org", "other"}, {"Content-Type", "text/evil"}, {"content-type", "x"},
		{"site", "berlin"}, {"NatsX", "kept"},
	}
	m := NewMessage("org/acme/node/n1/events", []byte("{}"), time.Time{}, "application/json", nil, props)
	if m.DeadLetter != "" {
		t.Fatalf("dead letter: %s", m.DeadLetter)
	}
	if m.Dropped != 7 {
		t.Errorf("Dropped = %d, want 7", m.Dropped)
	}
	got := map[string][]string{}
	for _, h := range m.AppendHeaders(nil) {
		got[h.Name] = append(got[h.Name], h.Value)
	}
	for k := range got {
		if ReservedProperty(k) && !strings.HasPrefix(k, "Nr-") && k != HeaderContentType {
			t.Errorf("reserved header %s forwarded", k)
		}
	}
	if v := got[HeaderContentType]; len(v) != 1 || v[0] != "application/json" {
		t.Errorf("Content-Type = %v", v)
	}
	if v := got[HeaderOrg]; len(v) != 1 || v[0] != "acme" {
		t.Errorf("Nr-Org = %v", v)
	}
	if got["site"][0] != "berlin" || got["NatsX"][0] != "kept" {
		t.Errorf("user properties %v", got)
	}
}

// A dead letter cut twice (to the header limit, then to the whole limit)
// says how many headers both cuts dropped.
func TestFitDeadLetterCountsEarlierDrops(t *testing.T) {
	hs := []Header{{HeaderError, "e"}}
	for i := range 10 {
		hs = append(hs, Header{"p" + strconv.Itoa(i), strings.Repeat("v", 1000)})
	}
	once, _ := FitDeadLetter(hs, nil, 6000)
	twice, _ := FitDeadLetter(once, nil, 3000)
	got := map[string]string{}
	for _, h := range twice {
		got[h.Name] = h.Value
	}
	if want := strconv.Itoa(10 - (len(twice) - 2)); got[HeaderDroppedHeaders] != want {
		t.Fatalf("%s = %q after two cuts, want %s (%d headers left)", HeaderDroppedHeaders, got[HeaderDroppedHeaders], want, len(twice))
	}
}

// Correlation data no header can carry (over 4 KiB printable, or binary
// whose base64 is) dead-letters the message as invalid_property, without
// the correlation header; what fits is kept.
func TestLongCorrelationDataDeadLettered(t *testing.T) {
	for _, tc := range []struct {
		name string
		corr []byte
		dead bool
	}{
		{"printable 4096", []byte(strings.Repeat("c", 4096)), false},
		{"printable 4097", []byte(strings.Repeat("c", 4097)), true},
		{"binary 3072", make([]byte, 3072), false},
		{"binary 3073", make([]byte, 3073), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMessage("org/a/node/n/reply", []byte("{}"), time.Time{}, "", tc.corr, nil)
			if got := m.DeadLetter != ""; got != tc.dead {
				t.Fatalf("dead letter %q, want dead=%v", m.DeadLetter, tc.dead)
			}
			if tc.dead && (m.CorrelationData != nil || m.DeadLetterReason() != ReasonInvalidProperty) {
				t.Fatalf("correlation kept (%d bytes) or reason %s", len(m.CorrelationData), m.DeadLetterReason())
			}
			for _, h := range m.AppendHeaders(nil) {
				if !printableHeaderValue(h.Value) {
					t.Fatalf("header %s of %d bytes", h.Name, len(h.Value))
				}
			}
		})
	}
}
