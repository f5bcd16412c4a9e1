package kafka

import (
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
)

// Header names specific to the Kafka sink.
const (
	// HeaderMsgID carries Message.DedupeID, the MQTT v5 user property
	// msg_id scoped to the node (<org>/<node>/<msg_id>), for consumers that
	// deduplicate.
	HeaderMsgID = "Nr-Msg-Id"
	// HeaderOriginalSize is set on a dead letter whose value was cut to fit
	// the topic's size limit; it holds the original payload length.
	HeaderOriginalSize = bridge.HeaderOriginalSize
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
// received the message as the record timestamp. A dead letter is cut
// (bridge.FitDeadLetter) to the dead-letter topic's limit less its key and
// kafkaconn.DeadLetterMargin, so that the cluster never refuses it for its
// size.
func (s *Sink) record(m *bridge.Message) *kgo.Record {
	r := &kgo.Record{
		Topic:     s.topic(m),
		Key:       []byte(key(m)),
		Value:     m.Payload,
		Timestamp: m.ReceivedAt,
	}
	if m.DeadLetter != "" {
		hs, value := m.FittedDeadLetter(HeaderMsgID, s.limits.MaxDeadLetter(r.Topic, len(r.Key)), 0)
		r.Value = value
		r.Headers = kafkaconn.Headers(hs)
		return r
	}
	var buf [12]bridge.Header
	hs := m.AppendHeaders(buf[:0])
	r.Headers = make([]kgo.RecordHeader, 0, len(hs)+1) // + Nr-Msg-Id
	for _, h := range hs {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Name, Value: []byte(h.Value)})
	}
	if id := m.DedupeID(); id != "" {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderMsgID, Value: []byte(id)})
	}
	return r
}

// classify gives a produce error its meaning through kafkaconn.WrapWrite,
// the one classification of Kafka write errors: a record too large for
// its topic is wrapped with bridge.ErrTooLarge, any other refusal for good
// (INVALID_RECORD) with bridge.ErrRejected, both keeping the cluster's
// error, so the worker dead-letters the message at once with it as
// Nr-Error. Everything else (the cluster unreachable, an unknown topic,
// authorization) is retried.
func (s *Sink) classify(r *kgo.Record, err error) error {
	if err == nil {
		return nil
	}
	op := "produce to " + r.Topic
	if kafkaconn.TooLarge(err) {
		op = fmt.Sprintf("%s: %d bytes with key and headers (topic limit %d bytes)", op, recordSize(r), s.limits.MaxBytes(r.Topic))
	}
	return bridge.BackboneError(op, err, kafkaconn.TooLarge(err), kafkaconn.Permanent(err))
}

// recordSize is about what r counts against the topic's limit.
func recordSize(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}
