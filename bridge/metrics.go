package bridge

import (
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
	// WorkerStarved counts a reconnect of worker (its client ID) because
	// the broker starved it: it received nothing while its sibling
	// workers kept receiving (MQTT_STARVE_TIMEOUT).
	WorkerStarved(worker string)
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

// WorkerStarved does nothing.
func (NopMetrics) WorkerStarved(string) {}

// TrackOldestInflight does nothing.
func (NopMetrics) TrackOldestInflight(string, func() time.Duration) {}

// CommandPublished does nothing.
func (NopMetrics) CommandPublished(string, time.Duration) {}

// CommandRefused does nothing.
func (NopMetrics) CommandRefused(string, string) {}

// StatusMetrics receives what command tracking counts; internal/metrics
// implements it. Methods must be safe for concurrent use and never block.
type StatusMetrics interface {
	// CommandCompleted counts a command that reached its first final
	// status (one of FinalStatuses); a command counts once.
	CommandCompleted(status string)
	// CommandReplied records the time from a command's PUBACK to its
	// first reply.
	CommandReplied(latency time.Duration)
}

// CommandCompleted does nothing.
func (NopMetrics) CommandCompleted(string) {}

// CommandReplied does nothing.
func (NopMetrics) CommandReplied(time.Duration) {}

var (
	_ StatusMetrics  = NopMetrics{}
	_ Metrics        = NopMetrics{}
	_ CommandMetrics = NopMetrics{}
)
