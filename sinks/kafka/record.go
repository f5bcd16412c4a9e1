package kafka

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// Header names specific to the Kafka sink.
const (
	// HeaderMsgID carries the MQTT v5 user property msg_id, for consumers
	// that deduplicate.
	HeaderMsgID = "Nr-Msg-Id"
	// HeaderOriginalSize is set on a dead letter whose value was cut to fit
	// the topic's size limit; it holds the original payload length.
	HeaderOriginalSize = "Nr-Original-Size"
)

// topic is where m goes: its kind's topic, or the dead-letter topic.
func (s *Sink) topic(m *bridge.Message) string {
	switch {
	case m.DeadLetter != "":
		return s.conn.DLQTopic
	case m.Kind == bridge.KindReply:
		return s.conn.RepliesTopic
	default:
		return s.conn.EventsTopic
	}
}

// key is the record key: org/<org>/node/<node>. A dead letter's topic may
// not parse, so its key is the raw MQTT topic without its last level (the
// same thing for a topic that does parse), or the whole topic when it has
// one level.
func key(m *bridge.Message) string {
	if m.DeadLetter == "" {
		return bridge.NodeTopic{Org: m.Org, Node: m.Node, Kind: m.Kind}.Key()
	}
	if i := strings.LastIndexByte(m.Topic, '/'); i > 0 {
		return m.Topic[:i]
	}
	return m.Topic
}

// record builds m's record: the payload byte for byte as the value, the
// headers of Message.Headers plus Nr-Msg-Id, and the time the bridge
// received the message as the record timestamp. A dead letter's value is
// cut to fit the dead-letter topic, with Nr-Original-Size.
func (s *Sink) record(m *bridge.Message) *kgo.Record {
	r := &kgo.Record{
		Topic:     s.topic(m),
		Key:       []byte(key(m)),
		Value:     m.Payload,
		Timestamp: m.ReceivedAt,
		Headers:   make([]kgo.RecordHeader, 0, m.HeaderCount()+2), // + Nr-Msg-Id, Nr-Original-Size
	}
	size := len(r.Key)
	m.Headers(func(k, v string) {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		size += len(k) + len(v)
	})
	if m.MsgID != "" {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderMsgID, Value: []byte(m.MsgID)})
		size += len(HeaderMsgID) + len(m.MsgID)
	}
	if m.DeadLetter != "" {
		if limit := s.limits.MaxDeadLetterValue(r.Topic, size+64); len(r.Value) > limit {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderOriginalSize, Value: []byte(strconv.Itoa(len(m.Payload)))})
			r.Value = r.Value[:limit]
		}
	}
	return r
}

// withoutValue is a copy of dead letter r with its value dropped and
// Nr-Original-Size set: the last resort when the cluster refuses the cut
// dead letter as too large, so that the reason and origin still arrive.
func withoutValue(r *kgo.Record, m *bridge.Message) *kgo.Record {
	c := &kgo.Record{Topic: r.Topic, Key: r.Key, Timestamp: r.Timestamp}
	for _, h := range r.Headers {
		if h.Key != HeaderOriginalSize {
			c.Headers = append(c.Headers, h)
		}
	}
	c.Headers = append(c.Headers, kgo.RecordHeader{Key: HeaderOriginalSize, Value: []byte(strconv.Itoa(len(m.Payload)))})
	return c
}

// tooLarge reports whether err is the cluster (or franz-go, checking
// against the topic's limit before sending) refusing a record for its size.
func tooLarge(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge)
}

// classify marks errors that no retry can fix permanent, so the worker
// dead-letters the message instead of retrying it forever: a record too
// large for its topic, or one the broker calls invalid.
func (s *Sink) classify(m *bridge.Message, r *kgo.Record, err error) error {
	if err == nil {
		return nil
	}
	if tooLarge(err) {
		return fmt.Errorf("produce to %s: %d bytes (topic limit %d bytes): %w: %w",
			r.Topic, len(m.Payload), s.limits.MaxBytes(r.Topic), bridge.ErrTooLarge, err)
	}
	if errors.Is(err, kerr.InvalidRecord) {
		return fmt.Errorf("produce to %s: %w: %w", r.Topic, bridge.ErrPermanent, err)
	}
	return fmt.Errorf("produce to %s: %w", r.Topic, err)
}
