package bridge

import (
	"errors"
	"time"
)

// Metrics receives what the MQTT side of the bridge counts. The package
// internal/metrics implements it on a Prometheus registry; declaring it here
// keeps bridge free of a Prometheus dependency and lets tests pass a fresh
// registry. Methods are called on the message path: implementations must be
// safe for concurrent use, cheap and never block. A nil Metrics given to a
// constructor means NopMetrics.
type Metrics interface {
	// MessageReceived counts a message read from MQTT.
	MessageReceived(kind Kind)
	// MessageForwarded counts a message the backbone acknowledged, with
	// the time from its MQTT receipt (Message.ReceivedAt) to that ack.
	MessageForwarded(kind Kind, latency time.Duration)
	// WriteError counts a backbone write that failed (each attempt).
	WriteError()
	// WriteRetry counts a failed write scheduled for another attempt.
	WriteRetry()
	// Deduplicated counts a write the backbone acknowledged without storing
	// it, because it already held a message with the same dedupe ID
	// (JetStream's PubAck duplicate flag): a redelivery the bridge wrote
	// again, that readers of the stream do not see twice. The sink calls
	// it; Kafka's idempotent producer deduplicates its own retries silently
	// and has no such flag, so it is never called there.
	Deduplicated()
	// DeadLettered counts a message written to the dead-letter
	// subject/topic; reason is one of Reasons.
	DeadLettered(reason string)
	// AckSent counts a message acknowledged to the broker after its write.
	AckSent()
	// MQTTConnected records whether the MQTT connection named connection
	// (its client ID) is up.
	MQTTConnected(connection string, up bool)
	// TrackInflight registers a function returning how many messages the
	// worker holds un-acked; it is read when metrics are collected, so the
	// message path pays nothing for it. Registering a name again replaces
	// the function.
	TrackInflight(worker string, inflight func() int)
	// PropertiesDropped counts n MQTT v5 user properties of one message
	// that were left out of its backbone headers; reason is DropReserved
	// (a name the bridge or the backbone acts on, see ReservedProperty).
	PropertiesDropped(reason string, n int)
	// TrackOldestInflight registers a function returning how long the
	// worker's oldest un-acked message has been waiting (0 when it holds
	// none): PUBACKs go out in receive order, so this is how long the
	// worker has been unable to acknowledge anything new. It is read when
	// metrics are collected. Registering a name again replaces the
	// function.
	TrackOldestInflight(worker string, age func() time.Duration)
}

// DropReserved is the reason label of nr_bridge_properties_dropped_total
// for a user property with a reserved name (ReservedProperty).
const DropReserved = "reserved"

// CommandMetrics receives what the command path counts: the HTTP API, the
// commands sources and the publisher call it. source is SourceHTTP or
// SourceStream; reason is one of Reasons (ReasonOf maps an error to one).
// Implementations must be safe for concurrent use and never block.
type CommandMetrics interface {
	// CommandPublished counts a command the broker acknowledged (PUBACK),
	// with the time the publish took.
	CommandPublished(source string, latency time.Duration)
	// CommandRefused counts a command that was not published.
	CommandRefused(source, reason string)
}

// PublisherMetrics is what the publisher reports: its command counts, its
// own MQTT connection, and the commands the sources dead-letter (counted
// under nr_bridge_dead_letters_total beside the events).
type PublisherMetrics interface {
	CommandMetrics
	MQTTConnected(connection string, up bool)
	DeadLettered(reason string)
}

// Command sources, the source label of the command metrics.
const (
	SourceHTTP   = "http"
	SourceStream = "stream"
)

// Reasons for a dead letter or a refused command: the reason label of
// nr_bridge_dead_letters_total and nr_bridge_commands_refused_total. The set
// is fixed so the label cannot grow without bound; anything else is counted
// as ReasonOther.
const (
	ReasonInvalidID        = "invalid_id"             // an org or node ID breaks the ID rule
	ReasonInvalidTarget    = "invalid_target"         // a command subject or key without the target shape
	ReasonInvalidProperty  = "invalid_property"       // an MQTT v5 property a header cannot carry
	ReasonTooLarge         = "too_large"              // over the backbone's or the API's size limit
	ReasonMalformed        = "malformed"              // a command body that is not a JSON object
	ReasonInvalidCommand   = "invalid_command"        // a command field missing or invalid
	ReasonExpired          = "expired"                // a command whose TTL ran out
	ReasonOutOfScope       = "out_of_scope"           // a command, event or reply of an org other than ORG_ID
	ReasonUnsupportedMedia = "unsupported_media_type" // an HTTP body that is not JSON
	ReasonUnavailable      = "unavailable"            // broker not reachable or no PUBACK in time
	ReasonRefused          = "refused"                // the broker refused it (PUBACK reason >= 0x80)
	ReasonRejected         = "rejected"               // the backbone refused the write for good (not for its size)
	ReasonPoison           = "poison"                 // kept failing while later messages on its connection were written
	ReasonOther            = "other"
)

// Reasons is the fixed set of reason label values, in a stable order.
var Reasons = []string{
	ReasonInvalidID, ReasonInvalidTarget, ReasonInvalidProperty, ReasonTooLarge,
	ReasonMalformed, ReasonInvalidCommand, ReasonExpired, ReasonOutOfScope,
	ReasonUnsupportedMedia, ReasonUnavailable, ReasonRefused, ReasonRejected, ReasonPoison, ReasonOther,
}

// ReasonOf maps an error of the bridge to its reason label, ReasonOther for
// an error it does not know, "" for nil.
func ReasonOf(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrInvalidID):
		return ReasonInvalidID
	case errors.Is(err, ErrInvalidTarget):
		return ReasonInvalidTarget
	case errors.Is(err, ErrMalformed):
		return ReasonMalformed
	case errors.Is(err, ErrExpired):
		return ReasonExpired
	case errors.Is(err, ErrInvalidCommand):
		return ReasonInvalidCommand
	case errors.Is(err, ErrOutOfScope):
		return ReasonOutOfScope
	case errors.Is(err, ErrTooLarge):
		return ReasonTooLarge
	case errors.Is(err, ErrRejected):
		return ReasonRejected
	case errors.Is(err, ErrPoison):
		return ReasonPoison
	}
	var refused *RefusedError
	if errors.As(err, &refused) {
		return ReasonRefused
	}
	if errors.Is(err, ErrNotConnected) || errors.Is(err, ErrPublishTimeout) {
		return ReasonUnavailable
	}
	return ReasonOther
}

// deadLetterReason is the reason label of a message marked for the
// dead-letter subject at receipt (NewMessage): a bad ID in its topic, or a
// property no header can carry.
func deadLetterReason(m *Message) string {
	if _, err := ParseNodeTopic(m.Topic); err != nil {
		if errors.Is(err, ErrInvalidID) {
			return ReasonInvalidID
		}
		return ReasonOther
	}
	return ReasonInvalidProperty
}

// NopMetrics counts nothing; it stands in for a nil Metrics or
// CommandMetrics.
type NopMetrics struct{}

// MessageReceived does nothing.
func (NopMetrics) MessageReceived(Kind) {}

// MessageForwarded does nothing.
func (NopMetrics) MessageForwarded(Kind, time.Duration) {}

// WriteError does nothing.
func (NopMetrics) WriteError() {}

// WriteRetry does nothing.
func (NopMetrics) WriteRetry() {}

// Deduplicated does nothing.
func (NopMetrics) Deduplicated() {}

// DeadLettered does nothing.
func (NopMetrics) DeadLettered(string) {}

// AckSent does nothing.
func (NopMetrics) AckSent() {}

// MQTTConnected does nothing.
func (NopMetrics) MQTTConnected(string, bool) {}

// TrackInflight does nothing.
func (NopMetrics) TrackInflight(string, func() int) {}

// PropertiesDropped does nothing.
func (NopMetrics) PropertiesDropped(string, int) {}

// TrackOldestInflight does nothing.
func (NopMetrics) TrackOldestInflight(string, func() time.Duration) {}

// CommandPublished does nothing.
func (NopMetrics) CommandPublished(string, time.Duration) {}

// CommandRefused does nothing.
func (NopMetrics) CommandRefused(string, string) {}

var (
	_ Metrics        = NopMetrics{}
	_ CommandMetrics = NopMetrics{}
)
