package kafkaconn

import (
	"crypto/tls"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
)

// Permanent reports whether a produce failed for a reason that no retry
// of the same record can fix, so that the caller dead-letters it at once:
// the record is too large for the topic (MESSAGE_TOO_LARGE, also raised by
// franz-go itself before sending, or RECORD_LIST_TOO_LARGE) or the broker
// found it invalid (INVALID_RECORD, CORRUPT_MESSAGE for a record the
// broker cannot accept as it is).
//
// Everything else is transient and retried with backoff: the cluster
// unreachable, UNKNOWN_TOPIC_OR_PARTITION (a topic deleted or a cluster
// that lost its state), NOT_LEADER, authorization errors. Those hold for
// every record alike, and dead-lettering during an outage would empty the
// stream into the dead letters. This is the one classification of Kafka
// write errors: the event sink, the dead-letter writes, the commands
// source and the status store all use it.
func Permanent(err error) bool {
	return TooLarge(err) || errors.Is(err, kerr.InvalidRecord) || errors.Is(err, kerr.CorruptMessage)
}

// TooLarge reports whether err is a record refused for its size, a
// Permanent error that the caller may answer by cutting the record.
func TooLarge(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge)
}

// Refused reports whether err is the cluster rejecting the bridge's
// credentials or the bridge rejecting the cluster's certificate: waiting
// for the cluster cannot fix it.
func Refused(err error) bool {
	var certErr *tls.CertificateVerificationError
	return errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, kerr.UnsupportedSaslMechanism) ||
		errors.As(err, &certErr)
}
