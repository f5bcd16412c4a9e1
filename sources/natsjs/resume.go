package natsjs

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// resumeInterval is how often at most the source sets up the stream and
// consumer again after losing them.
const resumeInterval = 2 * time.Second

// resume sets up the stream (with NATS_MANAGE_STREAMS) and the durable
// consumer again whenever consuming lost them, and consumes again, until
// Stop, so commands written to a recreated stream are published without a
// restart. Messages of the old consumer still in flight finish as before;
// their acks fail and the new consumer delivers them again.
func (s *Source) resume() {
	defer close(s.resumed)
	for {
		select {
		case <-s.lost:
		case <-s.stopping:
			return
		}
		select {
		case <-time.After(resumeInterval):
		case <-s.stopping:
			return
		}
		ctx, cancel := context.WithTimeout(s.ctx, resumeInterval)
		cons, err := s.ensure(ctx)
		cancel()
		if err != nil {
			s.log.Error("commands stream or consumer lost and not set up again; retrying", "stream", s.cfg.Stream, "consumer", s.consumer, "err", err)
			select {
			case s.lost <- struct{}{}:
			default:
			}
			continue
		}
		s.ccMu.Lock()
		select {
		case <-s.stopping:
			s.ccMu.Unlock()
			return
		default:
		}
		cc, err := s.consume(cons)
		if err != nil {
			s.ccMu.Unlock()
			s.log.Error("consuming commands again failed; retrying", "err", err)
			select {
			case s.lost <- struct{}{}:
			default:
			}
			continue
		}
		old := s.cc
		s.cc = cc
		s.ccMu.Unlock()
		old.Stop()
		s.log.Warn("commands stream or consumer was lost (deleted, or the server lost its store): set up again, consuming", "stream", s.cfg.Stream, "consumer", s.consumer)
	}
}

// consumeContext is the current consume context.
func (s *Source) consumeContext() jetstream.ConsumeContext {
	s.ccMu.Lock()
	defer s.ccMu.Unlock()
	return s.cc
}
