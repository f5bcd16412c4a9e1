package bridge

import (
	"errors"
	"fmt"
)

// The errors of the bridge. Each is a sentinel matched with errors.Is (or a
// type matched with errors.As), and Classify (classify.go) is the one place
// that says what each means: retried or not, the dead-letter reason and
// metric label, the HTTP status. Wrap them with the operation that failed:
// fmt.Errorf("publish %s: %w", topic, ErrNotConnected).

// ErrInvalidID means an org or node ID breaks the ID rule: 1 to 64
// characters of A-Z a-z 0-9 _ -. Such an ID never reaches a topic, subject
// or key; an event that carries one is dead-lettered.
var ErrInvalidID = errors.New("invalid id")

// ErrPermanent marks a write that can never succeed as it is (a message over
// the backbone's size limit, a header the backbone cannot carry). A sink
// wraps it; the worker then dead-letters the message instead of retrying.
var ErrPermanent = errors.New("permanent write error")

// ErrNotConnected means the MQTT connection needed for the operation is down.
// Callers retry later; over HTTP it is a 503.
var ErrNotConnected = errors.New("mqtt not connected")

// ErrClosed means the component was shut down; nothing new is accepted.
var ErrClosed = errors.New("closed")

// ErrTooLarge means a message is over the backbone's size limit. It wraps
// ErrPermanent, so the worker dead-letters the message (reason too_large)
// instead of retrying it.
var ErrTooLarge = fmt.Errorf("message too large: %w", ErrPermanent)

// ErrRejected means the backbone refused a write for good for a reason other
// than its size (a JetStream API error 400 such as a wrong expected stream,
// a Kafka INVALID_RECORD): retrying the same message cannot help. It wraps
// ErrPermanent, so the message is dead-lettered (reason rejected) with the
// backbone's error as Nr-Error. natsconn.Permanent and kafkaconn.Permanent
// decide which backbone errors these are.
var ErrRejected = fmt.Errorf("refused by the backbone: %w", ErrPermanent)

// ErrPoison means a message kept failing while messages received after it
// on the same connection were written: whatever the backbone said, it is
// this message that cannot be stored, and holding it would hold every
// later acknowledgement of its connection. It wraps ErrPermanent (reason
// poison).
var ErrPoison = fmt.Errorf("poison message: kept failing while later messages were written: %w", ErrPermanent)

// ErrMalformed means a command body is not a single JSON object: it is empty,
// not valid JSON or not UTF-8, another JSON value (array, string, number,
// null), or has data after the object. Over HTTP it is a 400; from a stream
// the message is dead-lettered. It is never ErrInvalidCommand.
var ErrMalformed = errors.New("not a JSON object")

// ErrInvalidCommand means a command is a JSON object but a field is missing,
// has the wrong JSON type or a bad value. Every such error is a *FieldError
// naming the field. Over HTTP it is a 422; from a stream the message is
// dead-lettered.
var ErrInvalidCommand = errors.New("invalid command")

// ErrExpired means a command's TTL has run out: issued_at + ttl_sec is not
// after now. It is kept apart from ErrInvalidCommand because the command was
// well formed when issued and only arrived (or waited) too long: callers map
// it to a 422 over HTTP and to the dead-letter reason "expired", and a
// publisher that retries a stream command stops retrying once it sees it.
var ErrExpired = errors.New("command expired")

// ErrInvalidTarget means a NATS subject or Kafka key is not a command
// target: it does not have the shape of a node or broadcast command subject
// or key, or one of its IDs is invalid (such errors wrap ErrInvalidID too).
// A source dead-letters the message.
var ErrInvalidTarget = errors.New("invalid command target")

// FieldError reports the first field of a command that is missing or
// invalid. It wraps ErrInvalidCommand, so errors.Is(err, ErrInvalidCommand)
// holds; use errors.As to get the field, which the HTTP layer returns as
// {"error": ..., "field": ...}.
type FieldError struct {
	// Field is the JSON name of the field, e.g. "ttl_sec".
	Field string
	// Reason says what is wrong in words a client can act on, e.g.
	// "must be an integer between 1 and 86400".
	Reason string
}

// Error returns "<field>: <reason>", e.g.
// "ttl_sec: must be an integer between 1 and 86400".
func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap returns ErrInvalidCommand, so every FieldError matches it with
// errors.Is.
func (e *FieldError) Unwrap() error { return ErrInvalidCommand }

// ErrOutOfScope means a command targets another org than ORG_ID. The bridge
// is scoped to one organization and never publishes outside it: over HTTP it
// is a 403, from a stream the message is dead-lettered.
var ErrOutOfScope = errors.New("command outside the bridge's ORG_ID")

// ErrPublishTimeout means the broker did not acknowledge a command (PUBACK)
// within MQTT_PUBLISH_TIMEOUT. The outcome is unknown: the broker may still
// deliver the command, so a retry can deliver it twice (agents dedupe on the
// correlation data). Over HTTP it is a 503; a source retries.
var ErrPublishTimeout = errors.New("no PUBACK from the broker in time")

// ErrInvalidProperty means an MQTT v5 property of an event or reply cannot
// be carried by a backbone header (a content type or user property that is
// not printable UTF-8, correlation data over 4 KiB): the message is
// dead-lettered (reason invalid_property).
var ErrInvalidProperty = errors.New("property no header can carry")

// ErrUnsupportedMedia means an HTTP command body is not declared as
// application/json (415, reason unsupported_media_type).
var ErrUnsupportedMedia = errors.New("content type must be application/json")

// ErrBadRequest means an HTTP request the API cannot read: an unreadable
// body, a query parameter with a bad value (400).
var ErrBadRequest = errors.New("bad request")

// ErrTooManyRequests means the API refuses a request for now because too
// many like it are in progress (429 with Retry-After): nothing was done,
// so the client may retry it as it is.
var ErrTooManyRequests = errors.New("too many requests")
