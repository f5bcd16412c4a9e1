package bridge

import "context"

// Sink writes node events and replies to the backbone.
//
// Write hands m to the backbone and returns; done is called exactly once,
// from any goroutine, when the outcome is known: done(nil) means the backbone
// acknowledged the message durably (JetStream PubAck, Kafka acks=all). An
// error wrapping ErrPermanent (ErrTooLarge, ErrRejected) means retrying
// cannot help and the caller dead-letters the message. Write blocks
// while the sink's bounded window is full (that is the backpressure) until
// ctx is done, then calls done(ctx.Err()). ctx only bounds that wait: it
// never cancels a write already handed to the backbone. A message with
// DeadLetter set is written to the dead-letter subject or topic. Write is
// safe for concurrent use; messages written from one goroutine are sent in
// that order.
//
// The done rule, the same for every sink: done may run before Write
// returns (on Write's goroutine, for a message refused at once) or later
// on the sink's completion goroutine; it must not block and must not call
// Write, since on the completion path a Write could wait for a window slot
// that only that path frees. A caller that writes again after a failure (a
// retry, a dead letter) does so from a goroutine of its own, as the MQTT
// workers do from their retry timers. Classify(err).Retry says whether the
// failure is worth a retry.
type Sink interface {
	Write(ctx context.Context, m *Message, done func(error))
	Close(ctx context.Context) error
}
