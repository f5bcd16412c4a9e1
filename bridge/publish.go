package bridge

import (
	"context"
	"fmt"
)

// Publisher sends a command to its target over MQTT at QoS 1 and returns
// once the broker acknowledged it (PUBACK). The bridge has exactly one
// (internal/publisher), the last check before a command leaves: it
// validates the target, the ORG_ID scope and the TTL again, whichever
// source the command came from. It is safe for concurrent use. source
// (SourceHTTP, SourceStream) labels logs and metrics.
type Publisher interface {
	Publish(ctx context.Context, t Target, c Command, source string) (PublishResult, error)
}

// PublishObserver is told what happens to each command the Publisher
// handles once it passed validation; Tracker implements it. Calls come
// from the goroutine that called Publish, so they may block briefly: the
// publisher calls CommandAccepted before it publishes, so that a reply,
// which may reach any replica, finds the status.
type PublishObserver interface {
	CommandAccepted(t Target, c Command, source string)
	CommandPublished(t Target, c Command, source string, res PublishResult)
	CommandFailed(t Target, c Command, source string, err error)
}

// PublishResult is what the broker said about a published command.
type PublishResult struct {
	// Topic is the MQTT topic the command was published to.
	Topic string
	// ReasonCode is the PUBACK reason code: 0x00 success, or 0x10
	// (ReasonNoMatchingSubscribers) when no client subscribes to the topic.
	ReasonCode byte
}

// ReasonNoMatchingSubscribers (0x10) is a PUBACK reason code that is a
// success: the broker accepted the command but no client is subscribed to
// its topic right now.
const ReasonNoMatchingSubscribers byte = 0x10

// RefusedError is a PUBACK with a reason code >= 0x80: the broker refused
// the command. Temporary says whether another attempt later may succeed.
type RefusedError struct {
	// Topic is the MQTT topic the command was published to.
	Topic string
	// ReasonCode is the PUBACK reason code, e.g. 0x87 (not authorized).
	ReasonCode byte
	// Reason is the broker's reason string, when it sent one.
	Reason string
}

// Error says which topic was refused and why, e.g.
// "broker refused org/o1/node/n1/cmd: reason code 0x87 (not authorized)".
func (e *RefusedError) Error() string {
	s := fmt.Sprintf("broker refused %s: reason code 0x%02x (%s)", e.Topic, e.ReasonCode, pubackReasonName(e.ReasonCode))
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Temporary reports whether the refusal may pass: 0x97 quota exceeded, 0x91
// packet identifier in use, 0x80 unspecified error and 0x83 implementation
// specific error (brokers use these two for internal trouble such as a full
// store). 0x87 not authorized, 0x90 topic name invalid, 0x99 payload format
// invalid and anything else are permanent for this command.
func (e *RefusedError) Temporary() bool {
	switch e.ReasonCode {
	case 0x80, 0x83, 0x91, 0x97:
		return true
	}
	return false
}

func pubackReasonName(rc byte) string {
	switch rc {
	case 0x80:
		return "unspecified error"
	case 0x83:
		return "implementation specific error"
	case 0x87:
		return "not authorized"
	case 0x90:
		return "topic name invalid"
	case 0x91:
		return "packet identifier in use"
	case 0x97:
		return "quota exceeded"
	case 0x99:
		return "payload format invalid"
	}
	return "unknown"
}
