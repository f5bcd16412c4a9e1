package bridge

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"slices"
	"time"
	"unicode/utf8"
)

// The statuses of a command (CommandStatus.Status). A command is accepted
// once the publisher validated it, published once the broker acknowledged
// it (PUBACK), and then ends replied, expired or failed.
const (
	StatusAccepted  = "accepted"
	StatusPublished = "published"
	StatusReplied   = "replied"
	StatusExpired   = "expired"
	StatusFailed    = "failed"
)

// FinalStatuses are the statuses a command ends in: the status label of
// nr_bridge_commands_completed_total.
var FinalStatuses = []string{StatusReplied, StatusExpired, StatusFailed}

// Bounds on what a status document keeps of the replies, so that it stays
// far below the NATS max_payload (1 MiB by default) and a Kafka record's
// limit: the replies themselves are always in NR_REPLIES / nr.replies, in
// full.
const (
	// MaxReplyPayload is the largest reply payload a status keeps (64
	// KiB); a larger reply is recorded with its size and Truncated set.
	MaxReplyPayload = 64 << 10
	// MaxReplyBytes is the total of reply payload bytes one status keeps
	// (256 KiB); once reached, later replies of a broadcast are recorded
	// without their payload (Truncated).
	MaxReplyBytes = 256 << 10
	// MaxReplies is how many replies one status keeps: the first 100
	// nodes that answer a broadcast. Later ones are counted in
	// RepliesDropped.
	MaxReplies = 100
	// MaxReplyDepth is the deepest nesting of arrays and objects a JSON
	// reply payload may have to be kept as JSON; a deeper one is kept as
	// base64. A status document wraps the payload in three more levels,
	// and encoding/json refuses documents over 10,000 levels: without the
	// bound, one hostile reply would make the status unreadable. 100 is
	// also within what common JSON parsers accept (serde_json: 128).
	MaxReplyDepth = 100
)

// CommandStatus is the status document of one command, keyed by org and
// correlation ID: what GET /org/{orgId}/commands/{correlationId} returns
// and what the status stores keep as JSON. Timestamps are UTC and omitted
// until the step happened. Treat a document as a value: stores hand out
// copies.
type CommandStatus struct {
	Org           string `json:"org"`
	CorrelationID string `json:"correlation_id"`
	// Node is the target node; empty for a broadcast.
	Node      string `json:"node,omitempty"`
	Broadcast bool   `json:"broadcast,omitempty"`
	Type      string `json:"type"`
	Topic     string `json:"topic"`
	// Source is where the command came from: http or stream.
	Source string `json:"source"`
	// Status is one of accepted, published, replied, expired, failed; see
	// Refresh for how it follows from the other fields.
	Status    string    `json:"status"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`

	AcceptedAt  time.Time `json:"accepted_at"`
	PublishedAt time.Time `json:"published_at,omitzero"`
	// ReasonCode is the PUBACK reason code (0 success, 16 no matching
	// subscribers); set with PublishedAt.
	ReasonCode *int `json:"puback_reason_code,omitempty"`
	// NoSubscribers is set when the PUBACK said 0x10: no client was
	// subscribed to the command's topic, so no node got it.
	NoSubscribers bool      `json:"no_subscribers,omitempty"`
	RepliedAt     time.Time `json:"replied_at,omitzero"`
	ExpiredAt     time.Time `json:"expired_at,omitzero"`
	FailedAt      time.Time `json:"failed_at,omitzero"`
	// Error is why the command failed.
	Error string `json:"error,omitempty"`

	// Replies are the replies received, at most MaxReplies, in the order
	// they were recorded: one for a node command, one per node for a
	// broadcast.
	Replies []Reply `json:"replies,omitempty"`
	// RepliesDropped counts broadcast replies beyond MaxReplies.
	RepliesDropped int `json:"replies_dropped,omitempty"`
}

// Reply is one node's reply as a status keeps it. The payload is kept as
// JSON in Payload when it is valid JSON nested at most MaxReplyDepth
// levels (re-encoded compactly), else base64 in PayloadBase64; a payload
// over MaxReplyPayload, past the document's MaxReplyBytes, or too large
// for the store's record (see FitStatus), is left out and Truncated set.
// Size is always the original length.
type Reply struct {
	Node          string          `json:"node"`
	ReceivedAt    time.Time       `json:"received_at"`
	ContentType   string          `json:"content_type,omitempty"`
	Size          int             `json:"size"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadBase64 string          `json:"payload_base64,omitempty"`
	Truncated     bool            `json:"truncated,omitempty"`
	// DeadLettered says the backbone refused the reply for good (too
	// large for the replies stream or topic, or rejected): it went to the
	// dead-letter subject or topic, not to NR_REPLIES / nr.replies, but
	// the node did answer.
	DeadLettered bool `json:"dead_lettered,omitempty"`
}

// NewCommandStatus returns the accepted status of command c to target t.
func NewCommandStatus(t Target, c Command, source string, now time.Time) *CommandStatus {
	s := &CommandStatus{
		Org:           t.Org,
		CorrelationID: c.CorrelationID,
		Node:          t.Node,
		Broadcast:     t.Broadcast(),
		Type:          c.Type,
		Topic:         t.MQTTTopic(),
		Source:        source,
		IssuedAt:      time.Unix(c.IssuedAt, 0).UTC(),
		ExpiresAt:     c.ExpiresAt(),
		AcceptedAt:    now.UTC(),
	}
	s.Refresh(now)
	return s
}

// SameCommand reports whether s is the status of command c to t, rather
// than of an earlier command that used the same correlation ID.
func (s *CommandStatus) SameCommand(t Target, c Command) bool {
	return s.Node == t.Node && s.Type == c.Type && s.IssuedAt.Equal(time.Unix(c.IssuedAt, 0))
}

// Refresh sets Status from the other fields as of now: replied once a
// reply is recorded (even one that came after the TTL, or after a publish
// that timed out but reached the node), else failed, else expired (also
// when the TTL has passed and no replica recorded the expiry yet), else
// published, else accepted.
func (s *CommandStatus) Refresh(now time.Time) {
	switch {
	case len(s.Replies) > 0:
		s.Status = StatusReplied
	case !s.FailedAt.IsZero():
		s.Status = StatusFailed
	case !s.ExpiredAt.IsZero() || !now.Before(s.ExpiresAt):
		s.Status = StatusExpired
	case !s.PublishedAt.IsZero():
		s.Status = StatusPublished
	default:
		s.Status = StatusAccepted
	}
}

// Final reports whether the status can no longer change on its own:
// replied, expired or failed (a broadcast still collects replies after its
// first one).
func (s *CommandStatus) Final() bool {
	return s.Status == StatusReplied || s.Status == StatusExpired || s.Status == StatusFailed
}

// Clone returns a deep copy.
func (s *CommandStatus) Clone() *CommandStatus {
	c := *s
	if s.ReasonCode != nil {
		rc := *s.ReasonCode
		c.ReasonCode = &rc
	}
	c.Replies = slices.Clone(s.Replies)
	return &c
}

// HasReplyFrom reports whether a reply from node is recorded.
func (s *CommandStatus) HasReplyFrom(node string) bool {
	for _, r := range s.Replies {
		if r.Node == node {
			return true
		}
	}
	return false
}

// AddReply records r within the bounds (MaxReplies, MaxReplyBytes) and
// reports whether s changed. A reply from a node already recorded changes
// nothing (MQTT may deliver a reply twice); one past MaxReplies only counts
// in RepliesDropped.
func (s *CommandStatus) AddReply(r Reply) bool {
	if s.HasReplyFrom(r.Node) {
		return false
	}
	if len(s.Replies) >= MaxReplies {
		s.RepliesDropped++
		return true
	}
	kept := 0
	for _, x := range s.Replies {
		kept += len(x.Payload) + len(x.PayloadBase64)
	}
	if kept+len(r.Payload)+len(r.PayloadBase64) > MaxReplyBytes {
		r.Payload, r.PayloadBase64, r.Truncated = nil, "", true
	}
	s.Replies = append(s.Replies, r)
	if s.RepliedAt.IsZero() || r.ReceivedAt.Before(s.RepliedAt) {
		s.RepliedAt = r.ReceivedAt
	}
	return true
}

// NewReply builds the Reply of a reply message from node: the payload as
// JSON when it is valid JSON in valid UTF-8 nested at most MaxReplyDepth
// levels (what any JSON client reads back), else base64, and left out
// (Truncated) above MaxReplyPayload.
func NewReply(node string, payload []byte, contentType string, receivedAt time.Time) Reply {
	r := Reply{Node: node, ReceivedAt: receivedAt.UTC(), ContentType: contentType, Size: len(payload)}
	switch {
	case len(payload) > MaxReplyPayload:
		r.Truncated = true
	case len(payload) > 0 && jsonDepth(payload) <= MaxReplyDepth && utf8.Valid(payload) && json.Valid(payload):
		// Compact, so the kept size is predictable whatever whitespace the
		// node sent, and escaped as json.Marshal will (<, >, & in strings),
		// so that the kept size is the size in the stored document; the
		// copy also frees the document from paho's buffer.
		var c, b bytes.Buffer
		c.Grow(len(payload))
		_ = json.Compact(&c, payload) // valid, checked above
		b.Grow(c.Len())
		json.HTMLEscape(&b, c.Bytes())
		r.Payload = json.RawMessage(b.Bytes())
	case len(payload) > 0:
		r.PayloadBase64 = base64.StdEncoding.EncodeToString(payload)
	}
	return r
}

// jsonDepth is the deepest nesting of arrays and objects in b, read as
// JSON: brackets inside strings do not count. It does not validate b.
func jsonDepth(b []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return deepest
}

// maxKeyToken bounds the ID part of a status key: a NATS subject must fit
// the protocol's 4 KiB control line, and COMMAND_MAX_STRING_LEN allows IDs
// of up to 4 KiB.
const maxKeyToken = 512

// StatusKey is the key of a command's status in a store: "<org>.<id>"
// when the correlation ID is made of A-Z a-z 0-9 _ - only (so operators
// can read it), else "<org>.=<base64url of the ID>", and for an ID whose
// key would be longer than 512 characters "<org>.==<base64url of its
// SHA-256>". All are valid NATS KV keys; different IDs share a key only
// through a SHA-256 collision.
func StatusKey(org, correlationID string) string {
	if plainKeyToken(correlationID) && len(correlationID) <= maxKeyToken {
		return org + "." + correlationID
	}
	if base64.RawURLEncoding.EncodedLen(len(correlationID)) < maxKeyToken {
		return org + ".=" + base64.RawURLEncoding.EncodeToString([]byte(correlationID))
	}
	sum := sha256.Sum256([]byte(correlationID))
	return org + ".==" + base64.RawURLEncoding.EncodeToString(sum[:])
}

func plainKeyToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
