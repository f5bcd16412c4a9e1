package bridge

import (
	"encoding/base64"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Header names set on every forwarded message (docs/contract.md). Sinks add their
// own deduplication header (Nats-Msg-Id or Nr-Msg-Id) from Message.MsgID.
const (
	HeaderTopic          = "Nr-Topic"
	HeaderOrg            = "Nr-Org"
	HeaderNode           = "Nr-Node"
	HeaderKind           = "Nr-Kind"
	HeaderReceivedAt     = "Nr-Received-At"
	HeaderContentType    = "Content-Type"
	HeaderCorrelation    = "Nr-Correlation-Data"
	HeaderCorrelationEnc = "Nr-Correlation-Data-Encoding"
	HeaderError          = "Nr-Error"
	HeaderReason         = "Nr-Reason"
	HeaderSubject        = "Nr-Subject"
)

// MsgIDProperty is the MQTT v5 user property whose value becomes the
// backbone's deduplication ID.
const MsgIDProperty = "msg_id"

// maxHeaderValueLen bounds what a user property may carry into a header.
const maxHeaderValueLen = 4096

// Property is one MQTT v5 user property.
type Property struct {
	Name, Value string
}

// Message is one event or reply on its way from MQTT to a sink. The payload
// is never modified. A message with DeadLetter set goes to the dead-letter
// subject or topic instead of its stream, with DeadLetter as the reason.
type Message struct {
	Topic           string
	Org, Node       string // as read from the topic; may be invalid when DeadLetter is set
	Kind            Kind
	Payload         []byte
	ReceivedAt      time.Time
	ContentType     string
	CorrelationData []byte
	Properties      []Property // user properties, minus msg_id and reserved names (ReservedProperty)
	MsgID           string     // user property msg_id, "" when absent
	DeadLetter      string     // the reason, one line, when the message is rejected
	// Reason is DeadLetter's reason label, one of Reasons (Classify): the
	// dead letter's Nr-Reason header and the metrics' reason label.
	Reason string
	// Dropped is how many user properties had a reserved name and were
	// left out of the headers.
	Dropped int
	// MinimalDeadLetter is set by the worker when the backbone refused m's
	// dead letter for good although it was cut to the backbone's limit:
	// the sink then writes it cut to its minimum (FittedDeadLetter), so
	// that the message is still recorded and never acknowledged unstored.
	MinimalDeadLetter bool
}

// FittedDeadLetter is m's dead letter (m.DeadLetter set) as a sink writes
// it: the headers of Headers cut with FitDeadLetter to limit bytes of
// headers and payload together, and its headers alone to headerLimit bytes
// when headerLimit > 0 (JetStream stores at most 64 KB of headers whatever
// its payload limit); then the deduplication header dedupeName with
// DedupeID, whose room is kept out of both limits, so that a redelivered
// message gives one dead letter, not two. The limits are what the backbone
// takes, less the sink's framing margin. With MinimalDeadLetter set, the
// dead letter is cut to its minimum whatever the limits say: the bridge's
// own headers (Nr-Error, the origin, Nr-Original-Size) with values of at
// most 256 bytes, no other header and no payload.
func (m *Message) FittedDeadLetter(dedupeName string, limit, headerLimit int) ([]Header, []byte) {
	hs := m.AppendHeaders(make([]Header, 0, 16))
	var dedupe Header
	if id := m.DedupeID(); id != "" && !m.MinimalDeadLetter {
		dedupe = Header{dedupeName, id}
		room := len(dedupeName) + len(id) + HeaderOverhead
		limit -= room
		headerLimit -= room
	}
	payload := m.Payload
	switch {
	case m.MinimalDeadLetter:
		hs, payload = FitDeadLetter(hs, payload, 0)
	case headerLimit > 0 && headersSize(hs) > headerLimit:
		hs, _ = FitDeadLetter(hs, nil, headerLimit)
		fallthrough
	default:
		hs, payload = FitDeadLetter(hs, payload, limit)
	}
	if dedupe.Name != "" {
		hs = append(hs, dedupe)
	}
	return hs, payload
}

// ReservedProperty reports whether a user property named name may not
// become a backbone header, on either backbone: the bridge's own Nr-
// headers, every Nats- header (JetStream acts on Nats-Expected-Stream,
// Nats-Rollup, Nats-Msg-Id and more, and a refused or rolled-up write is a
// node deciding the fate of other messages), and Content-Type, which the
// bridge sets from the MQTT content type. Names are matched ignoring case,
// as NATS and HTTP do. Such a property is dropped; the message is still
// forwarded.
func ReservedProperty(name string) bool {
	return hasPrefixFold(name, "nr-") || hasPrefixFold(name, "nats-") || strings.EqualFold(name, HeaderContentType)
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// MsgIDOf returns the node's msg_id from a deduplication ID of the form
// <org>/<node>/<msg_id> (what DedupeID gives for a message whose topic has
// valid IDs), or id unchanged when it has another form: for consumers that
// match what arrived against what a node sent.
func MsgIDOf(id string) string {
	if parts := strings.SplitN(id, "/", 3); len(parts) == 3 {
		return parts[2]
	}
	return id
}

// DedupeID is the backbone deduplication ID of m (Nats-Msg-Id on NATS,
// Nr-Msg-Id on Kafka): the node's msg_id scoped to its org and node,
// "<org>/<node>/<msg_id>", so that one node can never make the backbone
// drop another node's message as a duplicate. A dead letter whose topic
// has no valid org and node is scoped to its whole topic instead,
// "<topic>/<msg_id>" (quoted when not printable). "" when m has no msg_id.
func (m *Message) DedupeID() string {
	if m.MsgID == "" {
		return ""
	}
	if ValidID(m.Org) && ValidID(m.Node) {
		return m.Org + "/" + m.Node + "/" + m.MsgID
	}
	return HeaderSafe(m.Topic) + "/" + m.MsgID
}

// NewMessage builds the message for an MQTT publish on topic. A topic with an
// invalid ID, or user properties a backbone header cannot carry, give a
// message marked for the dead-letter subject with the reason; it is never
// dropped.
func NewMessage(topic string, payload []byte, receivedAt time.Time, contentType string, correlation []byte, props []Property) *Message {
	m := &Message{
		Topic:           topic,
		Payload:         payload,
		ReceivedAt:      receivedAt,
		ContentType:     contentType,
		CorrelationData: correlation,
	}
	t, err := ParseNodeTopic(topic)
	m.Org, m.Node, m.Kind = t.Org, t.Node, t.Kind
	if err != nil {
		m.DeadLetter = err.Error()
		if m.Kind != KindReply {
			m.Kind = KindEvents
		}
	}
	if !printableHeaderValue(contentType) {
		m.setDeadLetter(fmt.Sprintf("content type %q is not printable UTF-8", contentType))
		m.ContentType = ""
	}
	if n := len(correlation); n > maxHeaderValueLen || !printableHeaderValue(string(correlation)) && base64.StdEncoding.EncodedLen(n) > maxHeaderValueLen {
		// No header carries it (4 KiB, base64 for binary data): the
		// message is dead-lettered, without it.
		m.setDeadLetter(fmt.Sprintf("correlation data of %d bytes is over what a header carries (%d bytes, base64 for binary data)", n, maxHeaderValueLen))
		m.CorrelationData = nil
	}
	for _, p := range props {
		switch {
		case p.Name == MsgIDProperty:
			if !printableHeaderValue(p.Value) || strings.ContainsAny(p.Value, " ") {
				m.setDeadLetter(fmt.Sprintf("user property msg_id %q is not a printable token", p.Value))
				continue
			}
			m.MsgID = p.Value
		case ReservedProperty(p.Name):
			m.Dropped++
		case !validHeaderName(p.Name):
			m.setDeadLetter(fmt.Sprintf("user property name %q cannot be a header name", p.Name))
		case !printableHeaderValue(p.Value):
			m.setDeadLetter(fmt.Sprintf("user property %q has a value that is not printable UTF-8 (or over %d bytes)", p.Name, maxHeaderValueLen))
		default:
			m.Properties = append(m.Properties, p)
		}
	}
	if m.DeadLetter != "" {
		m.Reason = m.DeadLetterReason()
	}
	return m
}

func (m *Message) setDeadLetter(reason string) {
	if m.DeadLetter == "" {
		m.DeadLetter = reason
	}
}

// AppendHeaders appends the headers of the forwarded message to hs and
// returns the result, in a fixed order: the Nr- headers, Content-Type,
// correlation data, user properties, and for a dead letter Nr-Reason and
// Nr-Error (last, so no user property can follow it). It is the one place the headers are built: a sink sizes what
// it builds from len of the result. Values are safe for NATS and Kafka
// headers except Nr-Topic, Nr-Org and Nr-Node of a dead letter, which are
// quoted when not printable.
func (m *Message) AppendHeaders(hs []Header) []Header {
	hs = append(hs, Header{HeaderTopic, HeaderSafe(m.Topic)})
	if m.Org != "" {
		hs = append(hs, Header{HeaderOrg, HeaderSafe(m.Org)})
	}
	if m.Node != "" {
		hs = append(hs, Header{HeaderNode, HeaderSafe(m.Node)})
	}
	hs = append(hs, Header{HeaderKind, string(m.Kind)}, Header{HeaderReceivedAt, m.ReceivedAt.UTC().Format(time.RFC3339Nano)})
	if m.ContentType != "" {
		hs = append(hs, Header{HeaderContentType, m.ContentType})
	}
	if m.CorrelationData != nil {
		if s := string(m.CorrelationData); printableHeaderValue(s) {
			hs = append(hs, Header{HeaderCorrelation, s})
		} else {
			hs = append(hs, Header{HeaderCorrelation, base64.StdEncoding.EncodeToString(m.CorrelationData)},
				Header{HeaderCorrelationEnc, "base64"})
		}
	}
	for _, p := range m.Properties {
		hs = append(hs, Header{p.Name, p.Value})
	}
	if m.DeadLetter != "" {
		reason := m.Reason
		if reason == "" {
			reason = ReasonOther
		}
		hs = append(hs, Header{HeaderReason, reason}, Header{HeaderError, HeaderSafe(m.DeadLetter)})
	}
	return hs
}

// HeaderSafe returns s when it is printable, else its Go-quoted form, so that
// what a node sent is still visible in a dead letter's headers.
func HeaderSafe(s string) string {
	if printableHeaderValue(s) {
		return s
	}
	q := fmt.Sprintf("%+q", s)
	if len(q) > maxHeaderValueLen {
		q = q[:maxHeaderValueLen]
	}
	return q
}

// printableHeaderValue reports whether s is valid UTF-8 with no control
// characters (CR and LF would end a NATS header line) and fits a header.
func printableHeaderValue(s string) bool {
	if len(s) > maxHeaderValueLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// validHeaderName reports whether s is an HTTP token (RFC 9110), the common
// ground of NATS and Kafka header names.
func validHeaderName(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}
