package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/backoff"
)

// onPublish runs on paho's single delivery goroutine. Blocking here while
// every slot is taken is the bridge's backpressure.
func (w *Worker) onPublish(pr paho.PublishReceived) (bool, error) {
	select {
	case w.slots <- struct{}{}:
	case <-w.stop:
		return true, nil // not acked: the broker redelivers it to this session
	}
	w.rx.add()
	p := pr.Packet
	var contentType string
	var corr []byte
	var props []bridge.Property
	if p.Properties != nil {
		contentType, corr = p.Properties.ContentType, p.Properties.CorrelationData
		if n := len(p.Properties.User); n > 0 {
			props = make([]bridge.Property, n)
			for i, u := range p.Properties.User {
				props[i] = bridge.Property{Name: u.Key, Value: u.Value}
			}
		}
	}
	m := bridge.NewMessage(p.Topic, p.Payload, time.Now(), contentType, corr, props)
	f := &flight{w: w, m: m, pr: pr}
	w.mu.Lock()
	if w.stopping {
		w.mu.Unlock()
		<-w.slots
		return true, nil
	}
	w.inflight++
	w.seq++
	f.seq = w.seq
	f.prev = w.tail
	if w.tail != nil {
		w.tail.next = f
	} else {
		w.head = f
	}
	w.tail = f
	w.mu.Unlock()

	w.metrics.MessageReceived(m.Kind)
	if m.Dropped > 0 {
		// A node may send these on every message: counted, logged at
		// DEBUG only.
		w.metrics.PropertiesDropped(bridge.DropReserved, m.Dropped)
		if w.log.Enabled(w.ctx, slog.LevelDebug) {
			w.log.Debug("reserved user properties dropped", "topic", bridge.HeaderSafe(m.Topic), "dropped", m.Dropped)
		}
	}
	if w.subIDs.Load() && (p.Properties == nil || p.Properties.SubscriptionIdentifier == nil || *p.Properties.SubscriptionIdentifier != w.subID) {
		// Delivered through a subscription of an earlier scope that the
		// session still holds: remove it, from the sibling workers'
		// sessions too (they were subscribed alike, and each such filter
		// would deliver a second copy of every message it matches). The
		// message itself is handled like any other; out of scope, it is
		// dead-lettered below.
		for _, peer := range w.peers {
			peer.dropStale(p.Topic)
		}
	}
	if !bridge.InScope(p.Topic, w.cfg.OrgID) {
		m.DeadLetter = fmt.Sprintf("topic %s is outside ORG_ID %s", bridge.HeaderSafe(p.Topic), w.cfg.OrgID)
		m.Reason = bridge.ReasonOutOfScope
		w.log.Warn("dead-lettering message", "topic", bridge.HeaderSafe(m.Topic), "reason", m.DeadLetter)
	} else if m.DeadLetter != "" {
		w.log.Warn("dead-lettering message", "topic", bridge.HeaderSafe(m.Topic), "reason", m.DeadLetter)
	} else if w.log.Enabled(w.ctx, slog.LevelDebug) {
		w.log.Debug("message received", "topic", m.Topic, "bytes", len(m.Payload))
	}
	w.sink.Write(w.ctx, m, f.done)
	return true, nil
}

// done is the sink's completion callback: ack on success; on a permanent
// error, or a poison message, write the dead letter instead; otherwise
// retry with backoff while the message stays un-acked. No path acks a
// message that is neither stored nor dead-lettered: a dead letter the
// backbone refuses is cut to its minimum, and if even that is refused it is
// retried like any transient failure, which the stall report makes visible.
func (f *flight) done(err error) {
	w := f.w
	if err == nil {
		if f.m.DeadLetter != "" {
			w.metrics.DeadLettered(f.m.Reason)
		} else {
			w.metrics.MessageForwarded(f.m.Kind, time.Since(f.m.ReceivedAt))
		}
		f.ack()
		w.release(f, f.m.DeadLetter == "")
		return
	}
	if w.ctx.Err() != nil {
		w.release(f, false) // shutting down: not acked, redelivered to this session later
		return
	}
	w.metrics.WriteError()
	permanent := !bridge.Retryable(err)
	switch {
	case permanent && f.m.DeadLetter == "":
		f.deadLetter(err)
		return
	case permanent && !f.m.MinimalDeadLetter:
		// The dead letter was cut to the backbone's limit and still
		// refused (a lower limit on the dead-letter stream, a header the
		// backbone will not take): write what is left of it at its
		// minimum.
		w.log.Error("dead letter refused by the backbone, writing it cut to its minimum", "topic", bridge.HeaderSafe(f.m.Topic),
			"reason", f.m.DeadLetter, "bytes", len(f.m.Payload), "err", err)
		f.m.MinimalDeadLetter = true
		f.attempt = 0
		f.schedule(0, err)
		return
	}
	f.attempt++
	if !f.failed {
		f.failed = true
		w.mu.Lock()
		f.failMark = w.written[kindIndex(f.m.Kind)].count
		w.mu.Unlock()
	}
	if f.m.DeadLetter == "" && f.attempt >= poisonAttempts && w.laterWritten(f) {
		f.deadLetter(fmt.Errorf("%w (%d attempts; last error: %w)", bridge.ErrPoison, f.attempt, err))
		return
	}
	if w.writeWarn.Allow() {
		if permanent {
			w.log.Error("minimal dead letter refused by the backbone, retrying; the worker cannot acknowledge until it is written",
				"topic", bridge.HeaderSafe(f.m.Topic), "reason", f.m.DeadLetter, "attempt", f.attempt, "err", err)
		} else {
			w.log.Warn("backbone write failed, retrying", "topic", bridge.HeaderSafe(f.m.Topic), "attempt", f.attempt, "err", err)
		}
	}
	f.schedule(backoff.Exponential(retryMin, retryMax)(f.attempt-1), err)
	w.metrics.WriteRetry()
}

// deadLetter turns f into a dead letter with err (which wraps ErrPermanent)
// as its reason and writes it.
func (f *flight) deadLetter(err error) {
	w := f.w
	f.m.DeadLetter = bridge.ReasonLine(err)
	f.m.Reason = bridge.ReasonOf(err)
	f.attempt = 0
	w.log.Warn("dead-lettering message", "topic", bridge.HeaderSafe(f.m.Topic), "reason", f.m.DeadLetter)
	// Written from a timer goroutine, not from here: done runs on the
	// sink's completion path, and a Write there could wait for a window
	// slot that only this path frees.
	f.schedule(0, err)
}

// laterWritten reports whether a message of f's kind received after f on
// this worker was stored after f first failed: the backbone takes this
// worker's messages, just not f. During an outage nothing is stored, so
// nothing is poison.
func (w *Worker) laterWritten(f *flight) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.written[kindIndex(f.m.Kind)]
	return p.highest > f.seq && p.at > f.failMark
}

// ack sends (or queues) the PUBACK of a written message.
func (f *flight) ack() {
	w := f.w
	aerr := f.pr.Client.Ack(f.pr.Packet)
	switch {
	case aerr == nil:
		if f.pr.Packet.QoS > 0 {
			w.metrics.AckSent()
		}
	case !errors.Is(aerr, paho.ErrManualAcknowledgmentDisabled):
		// The connection that delivered it is gone; the broker resends it
		// (DUP) on the new one, and that copy is written and acked.
		w.log.Debug("ack after reconnect not possible", "topic", f.m.Topic, "err", aerr)
	}
}

// schedule writes the message again after d, unless Close comes first;
// err is the failure that made it, kept for the stall report.
func (f *flight) schedule(d time.Duration, err error) {
	w := f.w
	w.mu.Lock()
	f.lastErr, f.tries = err, f.attempt
	if w.ctx.Err() != nil {
		w.mu.Unlock()
		w.release(f, false)
		return
	}
	w.retries[f] = time.AfterFunc(d, f.retry)
	w.mu.Unlock()
}

func (f *flight) retry() {
	w := f.w
	w.mu.Lock()
	_, pending := w.retries[f]
	delete(w.retries, f)
	w.mu.Unlock()
	if !pending {
		return // Close took it over
	}
	w.sink.Write(w.ctx, f.m, f.done)
}

// release frees f's slot and takes it off the un-acked list; stored says
// that f was written to its stream or topic (not a dead letter), which
// poison detection counts.
func (w *Worker) release(f *flight, stored bool) {
	<-w.slots
	w.mu.Lock()
	if stored {
		p := &w.written[kindIndex(f.m.Kind)]
		p.count++
		if f.seq > p.highest {
			p.highest, p.at = f.seq, p.count
		}
	}
	if f.prev != nil {
		f.prev.next = f.next
	} else {
		w.head = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else {
		w.tail = f.prev
	}
	f.prev, f.next = nil, nil
	w.inflight--
	if w.inflight == 0 {
		w.idle.Broadcast()
	}
	w.mu.Unlock()
}
