package natsjs

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// handle takes one command from delivery to ack, dead letter or nak.
func (s *Source) handle(d delivery) {
	m := d.msg
	if time.Since(d.at) > s.cfg.AckWait/3 {
		// It waited for a worker: give it a full AckWait for the publish.
		_ = m.InProgress()
	}
	subject := m.Subject()
	attempt := 1
	if meta, err := m.Metadata(); err == nil {
		attempt = int(meta.NumDelivered)
	}
	t, err := bridge.ParseCommandSubject(s.streams.SubjectPrefix, subject)
	if err != nil {
		s.deadLetter(m, "", s.in.Refuse(bridge.SourceStream, err))
		return
	}
	c, _, err := s.in.Submit(s.ctx, bridge.SourceStream, t, m.Data())
	switch {
	case err == nil:
		s.ack(m, c.CorrelationID)
	case !bridge.Retryable(err):
		s.deadLetter(m, c.CorrelationID, err)
	case s.ctx.Err() != nil:
		_ = m.Nak() // shutting down: another replica publishes it now
	default:
		s.retry(m, c, attempt, err)
	}
}

// ack removes a published command from the work queue. DoubleAck, not Ack:
// the worker waits for the server's confirmation, so an ack lost in transit
// is logged (the command comes back after AckWait and is published again)
// rather than unnoticed, and Stop returns with the acks done.
func (s *Source) ack(m jetstream.Msg, correlationID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), ackTimeout)
	defer cancel()
	if err := m.DoubleAck(ctx); err != nil {
		s.log.Warn("command published but its ack was not confirmed; it may be published again",
			"subject", m.Subject(), "correlation_id", correlationID, "err", err)
		return
	}
	s.log.Debug("command acked", "subject", m.Subject(), "correlation_id", correlationID)
}

// retry naks the command with a delay growing per delivery, cut to the
// TTL left (plus a little), so that the delivery after the TTL finds it
// expired and dead-letters it.
func (s *Source) retry(m jetstream.Msg, c bridge.Command, attempt int, cause error) {
	remaining := c.Remaining(time.Now())
	if remaining <= 0 {
		s.deadLetter(m, c.CorrelationID, fmt.Errorf("%w while retrying (last error: %v)", bridge.ErrExpired, cause))
		return
	}
	delay := s.backoff(attempt - 1)
	if delay > remaining {
		delay = remaining + 50*time.Millisecond
	}
	if err := m.NakWithDelay(delay); err != nil {
		s.log.Debug("nak failed; the command comes back after AckWait", "subject", m.Subject(), "err", err)
	}
	s.log.Log(context.Background(), s.retryLog.Level(), "command not published, retrying", "subject", m.Subject(), "correlation_id", c.CorrelationID,
		"attempt", attempt, "delay", delay.String(), "err", cause)
}
