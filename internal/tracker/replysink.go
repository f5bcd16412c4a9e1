package tracker

import (
	"context"
	"errors"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// WrapSink returns a Sink that writes through inner unchanged and hands
// each reply to the tracker to match it with its command once the
// backbone stored it, or refused it for good (too large for the replies
// stream or topic: the worker then dead-letters it, and the status
// records the reply with DeadLettered set, since the node did answer).
// Matching runs on the tracker's workers: the done callback, and with it
// the worker's MQTT ack, never waits for the status store, and a reply is
// written (and acked) whether or not its status can be updated.
func (t *Tracker) WrapSink(inner bridge.Sink) bridge.Sink { return &replySink{inner: inner, t: t} }

type replySink struct {
	inner bridge.Sink
	t     *Tracker
}

// Write implements Sink.
func (s *replySink) Write(ctx context.Context, m *bridge.Message, done func(error)) {
	if m.Kind != bridge.KindReply || m.DeadLetter != "" || len(m.CorrelationData) == 0 {
		s.inner.Write(ctx, m, done)
		return
	}
	// As received: the dead letter written after a refusal may be cut.
	j := replyJob{m: m, payload: m.Payload, contentType: m.ContentType}
	s.inner.Write(ctx, m, func(err error) {
		switch {
		case err == nil && m.DeadLetter == "":
			s.t.enqueueReply(j)
		case errors.Is(err, bridge.ErrPermanent):
			j.deadLettered = true
			s.t.enqueueReply(j)
		}
		done(err)
	})
}

// Close closes the wrapped sink.
func (s *replySink) Close(ctx context.Context) error { return s.inner.Close(ctx) }
