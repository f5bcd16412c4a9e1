package bridge

import "context"

// Sink writes node events and replies to the backbone.
//
// Write hands m to the backbone and returns; done is called exactly once,
// from any goroutine, when the outcome is known: done(nil) means the backbone
// acknowledged the message durably (JetStream PubAck, Kafka acks=all). An
// error wrapping ErrPermanent means retrying cannot help and the caller
// dead-letters the message; any other error is worth a retry. Write blocks
// while the sink's bounded window is full (that is the backpressure) until
// ctx is done, then calls done(ctx.Err()). ctx only bounds that wait: it
// never cancels a write already handed to the backbone. A message with
// DeadLetter set is written to the dead-letter subject or topic. done must
// not block. Write is safe for concurrent use; messages written from one
// goroutine are sent in that order.
type Sink interface {
	Write(ctx context.Context, m *Message, done func(error))
	Close(ctx context.Context) error
}
