package ingest

import (
	"errors"
	"fmt"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// oldest returns how long the oldest un-acked message has waited, its
// topic, its failed attempts and last write error; age 0 when the worker
// holds nothing.
func (w *Worker) oldest() (age time.Duration, topic string, attempt int, lastErr error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f := w.head
	if f == nil {
		return 0, "", 0, nil
	}
	return time.Since(f.m.ReceivedAt), f.m.Topic, f.tries, f.lastErr
}

// Stalled returns an error when the worker's oldest un-acked message has
// waited longer than MQTT_STALL_TIMEOUT: PUBACKs go out in receive order,
// so the worker has acknowledged nothing received since, and with
// MQTT_MAX_INFLIGHT messages held the broker sends it nothing more. It
// names the worker, how long, the message's topic and the last write
// error. Receiver.Ready reports it, so a stall never looks healthy.
func (w *Worker) Stalled() error {
	age, topic, attempt, lastErr := w.oldest()
	if age <= w.stallAfter {
		return nil
	}
	msg := fmt.Sprintf("%s: no acknowledgement for %s, oldest un-acked message on topic %s", w.clientID, age.Round(time.Second), bridge.HeaderSafe(topic))
	if lastErr != nil {
		msg += fmt.Sprintf(" (%d failed attempts, last error: %s)", attempt, bridge.ReasonLine(lastErr))
	}
	return errors.New(msg)
}

// watchStall logs a WARN when the worker stalls (Stalled), again every
// MQTT_STALL_TIMEOUT while it lasts, and an INFO when it ends; it returns
// when the worker's context ends.
func (w *Worker) watchStall() {
	tick := time.NewTicker(min(max(w.stallAfter/4, 10*time.Millisecond), 5*time.Second))
	defer tick.Stop()
	var stalled, lastWarn time.Time // stalled: when the stall being reported started
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-tick.C:
		}
		age, topic, attempt, lastErr := w.oldest()
		now := time.Now()
		if age <= w.stallAfter {
			if !stalled.IsZero() {
				w.log.Info("MQTT worker acknowledging again", "stalled_for", now.Sub(stalled).Round(time.Millisecond).String())
				stalled = time.Time{}
			}
			continue
		}
		if stalled.IsZero() {
			stalled = now.Add(-age)
		} else if now.Sub(lastWarn) < w.stallAfter {
			continue
		}
		lastWarn = now
		w.log.Warn("MQTT worker stalled: its oldest message is not written, so no later message can be acknowledged",
			"topic", bridge.HeaderSafe(topic), "waiting", age.Round(time.Millisecond).String(), "attempt", attempt,
			"inflight", w.Inflight(), "err", lastErr)
	}
}
