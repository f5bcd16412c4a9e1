package bridge_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
)

func TestStatusKey(t *testing.T) {
	tests := []struct {
		name, org, id, want string
	}{
		{"plain", "acme", "7f3c9a52-1b_x", "acme.7f3c9a52-1b_x"},
		{"dot", "acme", "a.b", "acme.=YS5i"},
		{"space and slash", "acme", "a b/c", "acme.=YSBiL2M"},
		{"unicode", "acme", "é", "acme.=w6k"},
		{"looks encoded", "acme", "=YS5i", "acme.=PVlTNWk"},
		{"long plain", "acme", strings.Repeat("a", 600), "acme.==" + "ujXBcHKUF_FJngiG5-EvzbSrAK1BERCuHoiMdm1O1w0"},
		{"long encoded", "acme", strings.Repeat(".", 400), "acme.==" + "vVEqHnEkM5NmVtd1Nc59haaen-qobSxaU1NP6lMATMA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := bridge.StatusKey(tt.org, tt.id); got != tt.want {
				t.Fatalf("StatusKey(%q, %q) = %q, want %q", tt.org, tt.id, got, tt.want)
			}
		})
	}
}

func TestNewReply(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		payload []byte
		want    string
	}{
		{"JSON compacted", []byte("{ \"ok\" : true,\n \"n\": [1, 2] }"), `{"node":"n1","received_at":"2026-11-25T10:00:00Z","size":29,"payload":{"ok":true,"n":[1,2]}}`},
		{"JSON scalar", []byte(`42`), `{"node":"n1","received_at":"2026-11-25T10:00:00Z","size":2,"payload":42}`},
		{"binary", []byte{0xde, 0xad, 0xbe, 0xef}, `{"node":"n1","received_at":"2026-11-25T10:00:00Z","size":4,"payload_base64":"3q2+7w=="}`},
		{"text", []byte("OK done"), `{"node":"n1","received_at":"2026-11-25T10:00:00Z","size":7,"payload_base64":"T0sgZG9uZQ=="}`},
		{"empty", nil, `{"node":"n1","received_at":"2026-11-25T10:00:00Z","size":0}`},
		{"over the limit", bytes.Repeat([]byte("1"), bridge.MaxReplyPayload+1), fmt.Sprintf(`{"node":"n1","received_at":"2026-11-25T10:00:00Z","size":%d,"truncated":true}`, bridge.MaxReplyPayload+1)},
		{"at the limit", bytes.Repeat([]byte("1"), bridge.MaxReplyPayload), fmt.Sprintf(`{"node":"n1","received_at":"2026-11-25T10:00:00Z","size":%d,"payload":%s}`, bridge.MaxReplyPayload, strings.Repeat("1", bridge.MaxReplyPayload))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(bridge.NewReply("n1", tt.payload, "", at))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Fatalf("got  %s\nwant %s", b, tt.want)
			}
		})
	}
}

func TestAddReplyBounds(t *testing.T) {
	s := &bridge.CommandStatus{Broadcast: true}
	big := bytes.Repeat([]byte("x"), bridge.MaxReplyPayload) // base64: 4/3 of it
	for i := range bridge.MaxReplies + 5 {
		if !s.AddReply(bridge.NewReply(fmt.Sprintf("n%d", i), big, "", time.Now())) {
			t.Fatalf("reply %d not recorded", i)
		}
	}
	if s.AddReply(bridge.NewReply("n0", nil, "", time.Now())) {
		t.Error("a second reply from n0 changed the status")
	}
	if len(s.Replies) != bridge.MaxReplies || s.RepliesDropped != 5 {
		t.Fatalf("%d replies, %d dropped; want %d and 5", len(s.Replies), s.RepliesDropped, bridge.MaxReplies)
	}
	kept, withPayload := 0, 0
	for _, r := range s.Replies {
		kept += len(r.Payload) + len(r.PayloadBase64)
		if r.PayloadBase64 != "" {
			withPayload++
		} else if !r.Truncated {
			t.Errorf("reply of %s has neither payload nor truncated", r.Node)
		}
	}
	if kept > bridge.MaxReplyBytes || withPayload != bridge.MaxReplyBytes/len(s.Replies[0].PayloadBase64) {
		t.Fatalf("kept %d payload bytes in %d replies, want at most %d", kept, withPayload, bridge.MaxReplyBytes)
	}
}

func TestRefresh(t *testing.T) {
	now := time.Now()
	base := func() *bridge.CommandStatus {
		return &bridge.CommandStatus{AcceptedAt: now, ExpiresAt: now.Add(time.Minute)}
	}
	tests := []struct {
		name string
		set  func(*bridge.CommandStatus)
		at   time.Time
		want string
	}{
		{"accepted", func(*bridge.CommandStatus) {}, now, bridge.StatusAccepted},
		{"published", func(s *bridge.CommandStatus) { s.PublishedAt = now }, now, bridge.StatusPublished},
		{"expired lazily", func(s *bridge.CommandStatus) { s.PublishedAt = now }, now.Add(time.Minute), bridge.StatusExpired},
		{"expired recorded", func(s *bridge.CommandStatus) { s.ExpiredAt = now }, now, bridge.StatusExpired},
		{"failed", func(s *bridge.CommandStatus) { s.FailedAt = now }, now.Add(time.Hour), bridge.StatusFailed},
		{"late reply wins", func(s *bridge.CommandStatus) {
			s.ExpiredAt = now
			s.AddReply(bridge.NewReply("n1", nil, "", now))
		}, now.Add(time.Hour), bridge.StatusReplied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base()
			tt.set(s)
			s.Refresh(tt.at)
			if s.Status != tt.want {
				t.Fatalf("status %q, want %q", s.Status, tt.want)
			}
		})
	}
}
