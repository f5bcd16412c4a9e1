package bridge_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
)

func TestNewReplyHostileJSON(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	deep := func(n int) []byte { return []byte(strings.Repeat("[", n) + strings.Repeat("]", n)) }
	tests := []struct {
		name       string
		payload    []byte
		wantJSON   string // the payload field, when kept as JSON
		wantBase64 bool
	}{
		{"at the depth bound", deep(bridge.MaxReplyDepth), string(deep(bridge.MaxReplyDepth)), false},
		{"one level deeper", deep(bridge.MaxReplyDepth + 1), "", true},
		{"10,000 levels", deep(10_000), "", true},
		{"brackets in strings do not count", []byte(`{"s":"` + strings.Repeat("[", 500) + `\"{"}`), `{"s":"` + strings.Repeat("[", 500) + `\"{"}`, false},
		{"invalid UTF-8 in a string", []byte("{\"s\":\"\xff\"}"), "", true},
		{"HTML characters escaped as stored", []byte(`{"h":"<a&b>"}`), `{"h":"\u003ca\u0026b\u003e"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bridge.NewReply("n1", tt.payload, "", at)
			if r.Size != len(tt.payload) || r.Truncated {
				t.Fatalf("size %d truncated %v", r.Size, r.Truncated)
			}
			if tt.wantBase64 {
				if r.Payload != nil || r.PayloadBase64 == "" {
					t.Fatalf("payload %.40s base64 %.40s, want base64", r.Payload, r.PayloadBase64)
				}
			} else if string(r.Payload) != tt.wantJSON || r.PayloadBase64 != "" {
				t.Fatalf("payload %s, want %s", r.Payload, tt.wantJSON)
			}
			// The status document holding it encodes to exactly the kept
			// bytes, and decodes again.
			s := &bridge.CommandStatus{Broadcast: true}
			s.AddReply(r)
			b, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(b, r.Payload) {
				t.Fatalf("document %.200s does not hold the payload as kept", b)
			}
			var back bridge.CommandStatus
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("decode the document: %v", err)
			}
		})
	}
}

func TestMarshalStatusFits(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	s := &bridge.CommandStatus{Org: "acme", CorrelationID: "c", Broadcast: true, Type: "t", Error: strings.Repeat("e", 5000)}
	for i := range 10 {
		s.AddReply(bridge.NewReply(fmt.Sprintf("n%d", i), fmt.Appendf(nil, `{"v":"%s"}`, strings.Repeat("x", (i+1)*1000)), strings.Repeat("c", 2000), at))
	}
	full, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	// Fits: unchanged.
	if b, err := bridge.MarshalStatus(s, len(full)); err != nil || !bytes.Equal(b, full) {
		t.Fatalf("at its own size: %v, changed %v", err, !bytes.Equal(b, full))
	}
	for _, tt := range []struct {
		limit                        int
		wantTruncated, wantReplies   int
		wantContentType, wantDropped int
	}{
		// Just over 10 KB too large: the two largest payloads (10 and 9 KB) go.
		{len(full) - 10_050, 2, 10, 2000, 0},
		// Every payload out, content types cut to 256 bytes.
		{len(full) - 60_000, 10, 10, 256, 0},
		// Replies dropped, the first kept.
		{2000, 1, 1, 256, 9},
	} {
		t.Run(fmt.Sprint(tt.limit), func(t *testing.T) {
			b, err := bridge.MarshalStatus(s, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > tt.limit {
				t.Fatalf("%d bytes, limit %d", len(b), tt.limit)
			}
			var got bridge.CommandStatus
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			truncated := 0
			for _, r := range got.Replies {
				if r.Truncated {
					truncated++
					if r.Payload != nil {
						t.Errorf("%s truncated with a payload", r.Node)
					}
				}
			}
			if truncated != tt.wantTruncated || len(got.Replies) != tt.wantReplies || len(got.Replies[0].ContentType) != tt.wantContentType ||
				got.RepliesDropped != tt.wantDropped || got.Replies[0].Node != "n0" {
				t.Fatalf("%d truncated, %d replies, content type %d bytes, %d dropped", truncated, len(got.Replies), len(got.Replies[0].ContentType), got.RepliesDropped)
			}
		})
	}
	if len(s.Replies) != 10 || s.Replies[9].Truncated {
		t.Fatal("MarshalStatus changed its argument")
	}
	if _, err := bridge.MarshalStatus(s, 100); !errors.Is(err, bridge.ErrStatusTooLarge) {
		t.Fatalf("limit 100: %v, want ErrStatusTooLarge", err)
	}
}

func TestUnmarshalLenient(t *testing.T) {
	deep := strings.Repeat("[", 9_999) + `"]"` + strings.Repeat("]", 9_999)
	doc := `{"org":"acme","correlation_id":"c","replies":[{"node":"a","size":5,"payload":{"ok":true}},{"node":"b","size":20000,"payload":` + deep + `}]}`
	var s bridge.CommandStatus
	if err := json.Unmarshal([]byte(doc), &s); err == nil {
		t.Fatal("encoding/json reads the document: the test proves nothing")
	}
	cut, err := bridge.UnmarshalLenient([]byte(doc), &s)
	if err != nil || !cut {
		t.Fatalf("cut %v, %v", cut, err)
	}
	s.Repair()
	if len(s.Replies) != 2 || string(s.Replies[0].Payload) != `{"ok":true}` || s.Replies[0].Truncated ||
		s.Replies[1].Payload != nil || !s.Replies[1].Truncated || s.Replies[1].Size != 20000 {
		t.Fatalf("repaired %+v", s.Replies)
	}
	var plain bridge.CommandStatus
	if cut, err := bridge.UnmarshalLenient([]byte(`{"org":"acme"}`), &plain); cut || err != nil || plain.Org != "acme" {
		t.Fatalf("plain document: cut %v %v", cut, err)
	}
	if _, err := bridge.UnmarshalLenient([]byte(`{"org":`), &plain); err == nil {
		t.Fatal("a broken document decoded")
	}
}
