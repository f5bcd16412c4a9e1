package kafkastatus

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// A status is kept as several records, so that replicas writing at once
// never overwrite each other's replies: one command record, key
// bridge.StatusKey(org, id), holding the status without its replies, and
// one reply record per node, key <that key>.<node>. Compaction keeps the
// last record of each key, which is all the view needs.
const (
	kindCommand = "command"
	kindReply   = "reply"
)

// record is the JSON value of a record of the status topic.
type record struct {
	Kind          string `json:"kind"`
	Org           string `json:"org"`
	CorrelationID string `json:"correlation_id"`
	// Command is the status without Replies, RepliedAt and Status (kind
	// command).
	Command *bridge.CommandStatus `json:"command,omitempty"`
	// IssuedAt is the issued_at of the command a reply answers, telling it
	// from a later command with the same correlation ID (kind reply).
	IssuedAt time.Time `json:"issued_at,omitzero"`
	// AcceptedAt is the accepted_at of that command: its place in the
	// view's eviction order while its command record is not read yet
	// (kind reply).
	AcceptedAt time.Time     `json:"accepted_at,omitzero"`
	Reply      *bridge.Reply `json:"reply,omitempty"`
}

func commandKey(org, correlationID string) string { return bridge.StatusKey(org, correlationID) }

func replyKey(org, correlationID, node string) string {
	return bridge.StatusKey(org, correlationID) + "." + node
}

// commandPart is s without what the reply records carry or what is derived.
func commandPart(s *bridge.CommandStatus) *bridge.CommandStatus {
	c := s.Clone()
	c.Replies = nil
	c.RepliedAt = time.Time{}
	c.Status = ""
	return c
}

// sameCommandPart reports whether a and b have the same command part.
func sameCommandPart(a, b *bridge.CommandStatus) bool {
	if a == nil || b == nil {
		return a == b
	}
	ja, err1 := json.Marshal(commandPart(a))
	jb, err2 := json.Marshal(commandPart(b))
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// sameCommand reports whether a and b are statuses of the same command,
// not of two commands that used one correlation ID.
func sameCommand(a, b *bridge.CommandStatus) bool {
	return a.Node == b.Node && a.Type == b.Type && a.IssuedAt.Equal(b.IssuedAt)
}

// mergeCommand applies an incoming command record to the one held. Records
// of one key arrive in the order they were written (one partition), so
// the later one wins, except for what can only move forward: the first
// acceptance and PUBACK, an expiry, and the count of dropped replies; a
// record written from an older read must not undo them.
func mergeCommand(held, in *bridge.CommandStatus) *bridge.CommandStatus {
	if held == nil || !sameCommand(held, in) {
		return in
	}
	out := in.Clone()
	if !held.AcceptedAt.IsZero() && (out.AcceptedAt.IsZero() || held.AcceptedAt.Before(out.AcceptedAt)) {
		out.AcceptedAt = held.AcceptedAt
	}
	if !held.PublishedAt.IsZero() && (out.PublishedAt.IsZero() || held.PublishedAt.Before(out.PublishedAt)) {
		out.PublishedAt = held.PublishedAt
		if out.ReasonCode == nil {
			out.ReasonCode, out.NoSubscribers = held.ReasonCode, held.NoSubscribers
		}
	}
	if out.ExpiredAt.IsZero() {
		out.ExpiredAt = held.ExpiredAt
	}
	out.RepliesDropped = max(out.RepliesDropped, held.RepliesDropped)
	return out
}

// encode is the record of r under key k, cut to fit the topic: a reply
// too large loses its payload (truncated), then its content type is cut;
// a command record's error is cut.
func (s *Store) encode(k string, r record) (*kgo.Record, error) {
	b, err := json.Marshal(r)
	for step := 0; err == nil && len(b) > s.maxRecord; step++ {
		switch {
		case step == 0 && r.Reply != nil:
			c := *r.Reply
			c.DropPayload()
			r.Reply = &c
		case step == 1 && r.Reply != nil:
			c := *r.Reply
			c.CutContentType(256)
			r.Reply = &c
		case step == 2 && r.Command != nil:
			c := r.Command.Clone()
			c.Error = strings.ToValidUTF8(c.Error[:min(len(c.Error), 1024)], "")
			r.Command = c
		case step > 2:
			return nil, fmt.Errorf("status record of %d bytes, limit %d: %w", len(b), s.maxRecord, bridge.ErrStatusTooLarge)
		default:
			continue
		}
		b, err = json.Marshal(r)
	}
	if err != nil {
		return nil, err
	}
	return &kgo.Record{Key: []byte(k), Value: b}, nil
}

// decodeRecord reads a record of the topic; one nested too deeply for
// encoding/json (an older version's record of a hostile reply) is
// repaired: that payload is left out (truncated).
func (s *Store) decodeRecord(b []byte) (*record, error) {
	var r record
	cut, err := bridge.UnmarshalLenient(b, &r)
	if err != nil {
		return nil, fmt.Errorf("decode status record: %w", err)
	}
	if cut {
		if r.Reply != nil {
			r.Reply.Repair()
		}
		if r.Command != nil {
			r.Command.Repair()
		}
	}
	switch {
	case r.Kind == kindCommand && r.Command != nil:
	case r.Kind == kindReply && r.Reply != nil && bridge.ValidID(r.Reply.Node):
	default:
		return nil, fmt.Errorf("decode status record: kind %q without its body", r.Kind)
	}
	return &r, nil
}
