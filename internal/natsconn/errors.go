package natsconn

import (
	"errors"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Permanent reports whether a JetStream publish failed for a reason that
// no retry of the same message can fix, so that the caller dead-letters it
// at once: the message is over the server's max_payload
// (nats.ErrMaxPayload, or JetStream's "message size exceeds maximum"), or
// JetStream answered with an API error of code 400, which it gives for a
// message it will never take as it is (a wrong expected stream or last
// sequence, an invalid rollup or TTL header, an invalid Nats-Msg-Id).
//
// Everything else is transient and retried with backoff: not connected,
// timeouts, no responders (no stream listens on the subject, for example
// because it was deleted), 503 (JetStream temporarily unavailable, leader
// election), 404 stream not found and authorization errors. Those say
// nothing about the message and hold for every message alike, and
// dead-lettering during an outage would empty the stream into the dead
// letters. This is the one classification of NATS write errors: the event
// sink, the dead-letter writes, the commands source and the status store
// all use it.
func Permanent(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, nats.ErrMaxPayload) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum || apiErr.Code == http.StatusBadRequest
	}
	return false
}

// TooLarge reports whether err is a write refused for its size, a
// Permanent error that the caller may answer by cutting the message: over
// max_payload, over the stream's maximum message size, or headers over
// JetStream's limit (MaxHeaderBytes).
func TooLarge(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, nats.ErrMaxPayload) ||
		errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum ||
			apiErr.ErrorCode == JSErrCodeHeaderExceedsMaximum)
}

// JSErrCodeHeaderExceedsMaximum is JetStream's error code (API error 400)
// for a message whose encoded headers are over MaxHeaderBytes; nats.go has
// no constant for it.
const JSErrCodeHeaderExceedsMaximum jetstream.ErrorCode = 10097

// MaxHeaderBytes is the most encoded header bytes ("NATS/1.0" line
// included) JetStream stores in one message, whatever max_payload says:
// nats-server refuses more with JSErrCodeHeaderExceedsMaximum.
const MaxHeaderBytes = 65535

// StreamMissing reports whether a JetStream write failed because no stream
// takes its subject: "no responders" for a subject no stream listens on (a
// stream or key-value bucket deleted, a server that lost its store), or
// stream not found. Writers that manage their streams set them up again.
func StreamMissing(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) ||
		errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamNotFound
}

// Unreachable reports whether err from setting up a stream, a consumer or
// a bucket means "server not reachable (yet)" (a timeout, no responders, a
// reconnecting connection) rather than a refusal from the server, which is
// worth stopping for: an API error, JetStream not enabled, or a stream that
// does not exist where the bridge must not create it.
func Unreachable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return false
	}
	return !errors.Is(err, jetstream.ErrJetStreamNotEnabled) && !errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) &&
		!errors.Is(err, jetstream.ErrStreamNotFound)
}
