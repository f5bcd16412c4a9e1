package natsjs

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
)

// deadLetterMargin is what a command dead letter keeps free below the
// server's max_payload besides its subject: the "NATS/1.0" line and the end
// of the header block, with room to spare (FitDeadLetter already counts
// more per header than NATS writes).
const deadLetterMargin = 1024

// deadLetter writes the command to <prefix>.dlq.cmd with the reason
// (Nr-Error) and its subject (Nr-Subject), waits for JetStream's PubAck,
// then terminates the original. The dead letter is cut by
// bridge.FitDeadLetter to the connection's max_payload (the payload first,
// with Nr-Original-Size), so a command near the limit does not make a dead
// letter over it. If JetStream still refuses it for good (natsconn.Permanent:
// NR_DLQ's max_msg_size is smaller, say), it is cut to its minimum, the
// reason and the origin without payload, and written again. If the write
// fails the command is nakked and comes back, so it is never dropped: after
// RetryMin for a transient failure, after RetryMax when even the minimum is
// refused for good (an operator must fix NR_DLQ; logged as an ERROR).
func (s *Source) deadLetter(m jetstream.Msg, correlationID string, reason error) {
	subject := bridge.DeadLetterSubject(s.streams.SubjectPrefix, "cmd")
	headers := []bridge.Header{
		{Name: bridge.HeaderReason, Value: bridge.ReasonOf(reason)},
		{Name: bridge.HeaderError, Value: bridge.ReasonLine(reason)},
		{Name: bridge.HeaderSubject, Value: bridge.ReasonLine(errors.New(m.Subject()))},
	}
	hs, data := bridge.FitDeadLetter(headers, m.Data(), s.deadLetterLimit(subject))
	err := s.writeDeadLetter(subject, hs, data)
	if err != nil && natsconn.Permanent(err) {
		s.log.Warn("dead letter refused; writing it again cut to the reason and the origin",
			"subject", m.Subject(), "dlq_subject", subject, "size", len(data), "err", err)
		hs, data = bridge.FitDeadLetter(headers, m.Data(), 0)
		err = s.writeDeadLetter(subject, hs, data)
	}
	if err != nil {
		delay := s.cfg.RetryMin
		if natsconn.Permanent(err) {
			delay = s.cfg.RetryMax
			s.log.Error("dead letter refused even without payload; the command comes back", "subject", m.Subject(),
				"dlq_subject", subject, "correlation_id", correlationID, "err", err)
		} else {
			s.log.Warn("dead-letter write failed; the command comes back", "subject", m.Subject(), "dlq_subject", subject, "err", err)
		}
		_ = m.NakWithDelay(delay)
		return
	}
	s.in.DeadLettered(reason)
	// Term, not TermWithReason: servers before 2.10.4 ignore the latter and
	// would redeliver the message.
	if err := m.Term(); err != nil {
		s.log.Debug("term failed; the command comes back and is dead-lettered again", "subject", m.Subject(), "err", err)
	}
	s.log.Warn("command dead-lettered", "subject", m.Subject(), "correlation_id", correlationID, "err", reason)
}

// deadLetterLimit is what FitDeadLetter may fill with headers and payload
// of a dead letter on subject: the server's max_payload minus the subject
// and deadLetterMargin.
func (s *Source) deadLetterLimit(subject string) int {
	maxPayload := s.js.Conn().MaxPayload()
	if maxPayload <= 0 {
		maxPayload = 1 << 20 // not connected yet: nats-server's default max_payload
	}
	return max(int(maxPayload)-len(subject)-deadLetterMargin, 0)
}

// writeDeadLetter publishes one dead letter and waits for its PubAck.
func (s *Source) writeDeadLetter(subject string, hs []bridge.Header, data []byte) error {
	h := natsconn.Header(hs)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), ackTimeout)
	defer cancel()
	if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: h, Data: data}); err != nil {
		return fmt.Errorf("dead-letter to %s: %w", subject, err)
	}
	return nil
}
