package bridge

import (
	"errors"
	"fmt"
)

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
