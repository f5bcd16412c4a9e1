package tracker

import (
	"context"
	"errors"
	"time"

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
		case err != nil && !bridge.Retryable(err):
			j.deadLettered = true
			s.t.enqueueReply(j)
		}
		done(err)
	})
}

// Close closes the wrapped sink.
func (s *replySink) Close(ctx context.Context) error { return s.inner.Close(ctx) }

// replyJob is a reply to match with its command: the message, and its
// payload and content type as received (a dead letter may be cut).
type replyJob struct {
	m            *bridge.Message
	payload      []byte
	contentType  string
	deadLettered bool
}

// enqueueReply hands a reply the backbone stored, or refused for good
// (deadLettered), to the reply workers without ever blocking; a full
// queue drops the status update, not the reply.
func (t *Tracker) enqueueReply(j replyJob) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed || t.storeOf() == nil {
		return
	}
	select {
	case t.jobs <- j:
	default:
		if t.dropWarn.Allow() {
			m := j.m
			t.log.Warn("reply status update dropped: status store too slow", "org", m.Org, "node", m.Node, "correlation_id", string(m.CorrelationData))
		}
	}
}

func (t *Tracker) replyWorker() {
	defer t.workers.Done()
	for j := range t.jobs {
		t.recordReply(j)
	}
}

// recordReply adds a reply to its command's status: only a command this
// correlation ID names in this org, from its target node (any node for a
// broadcast), first reply per node. When the store knows the command
// without holding it (a ReplyRecorder: the bounded Kafka view), the
// store records the reply itself, so no reply is lost to the view's
// bounds.
func (t *Tracker) recordReply(j replyJob) {
	m := j.m
	ctx, cancel := context.WithTimeout(t.ctx, statusWriteTimeout)
	defer cancel()
	correlationID := string(m.CorrelationData)
	r := bridge.NewReply(m.Node, j.payload, j.contentType, m.ReceivedAt)
	r.DeadLettered = j.deadLettered
	var first, held, matched bool
	var latency time.Duration
	var err error
	for attempt := 1; ; attempt++ {
		var s *bridge.CommandStatus
		s, _, err = t.update(ctx, m.Org, correlationID, nil, func(cur *bridge.CommandStatus) *bridge.CommandStatus {
			first, held = false, cur != nil
			if cur == nil || !cur.Broadcast && cur.Node != m.Node {
				return nil
			}
			final := len(cur.Replies) > 0 || !cur.FailedAt.IsZero() || !cur.ExpiredAt.IsZero()
			if !cur.AddReply(r) {
				return nil
			}
			if !final && len(cur.Replies) > 0 {
				first = true
				if !cur.PublishedAt.IsZero() {
					latency = r.ReceivedAt.Sub(cur.PublishedAt)
				}
			}
			return cur
		})
		matched = s != nil
		rr, ok := t.storeOf().(bridge.ReplyRecorder)
		if err != nil || held || !ok {
			break
		}
		matched, first, err = rr.RecordReply(ctx, m.Org, correlationID, r)
		if errors.Is(err, bridge.ErrStatusConflict) && attempt < 3 {
			continue // the store caught up and now holds the command
		}
		first = first && matched
		latency = 0
		break
	}
	if err != nil {
		if t.ctx.Err() == nil {
			t.log.Warn("command status not recorded", "step", bridge.StatusReplied, "org", m.Org, "node", m.Node, "correlation_id", correlationID, "err", err)
		}
		return
	}
	if !matched {
		t.log.Debug("reply matches no tracked command", "org", m.Org, "node", m.Node, "correlation_id", correlationID, "held", held)
		return
	}
	if first {
		t.metrics.CommandCompleted(bridge.StatusReplied)
		if latency > 0 {
			t.metrics.CommandReplied(latency)
		}
	}
}
