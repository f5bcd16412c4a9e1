package bridge

import "context"

// WrapSink returns a Sink that writes through inner unchanged and, after
// a reply's write succeeded, hands the reply to the tracker to match it
// with its command. Matching runs on the tracker's workers: the done
// callback, and with it the worker's MQTT ack, never waits for the status
// store, and a reply is written (and acked) whether or not its status can
// be updated.
func (t *Tracker) WrapSink(inner Sink) Sink { return &replySink{inner: inner, t: t} }

type replySink struct {
	inner Sink
	t     *Tracker
}

// Write implements Sink.
func (s *replySink) Write(ctx context.Context, m *Message, done func(error)) {
	if m.Kind != KindReply || m.DeadLetter != "" || len(m.CorrelationData) == 0 {
		s.inner.Write(ctx, m, done)
		return
	}
	s.inner.Write(ctx, m, func(err error) {
		if err == nil && m.DeadLetter == "" {
			s.t.enqueueReply(m)
		}
		done(err)
	})
}

// Close closes the wrapped sink.
func (s *replySink) Close(ctx context.Context) error { return s.inner.Close(ctx) }
