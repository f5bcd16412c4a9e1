package ingest

import (
	"context"
	"errors"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/backoff"
)

// subscribe subscribes the worker's filters, tagged with the scope's
// subscription identifier when the broker supports them, then removes the
// unscoped filters a scoped bridge's session may still hold from an
// earlier run without ORG_ID: subscribing first means a scope change
// leaves no moment in which the session holds neither.
func (w *Worker) subscribe(cm *autopaho.ConnectionManager, subIDs bool) {
	sub := &paho.Subscribe{}
	if subIDs {
		id := w.subID
		sub.Properties = &paho.SubscribeProperties{SubscriptionIdentifier: &id}
	}
	for _, f := range w.filters {
		sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	backoff := backoff.Exponential(w.cfg.ReconnectMin, w.cfg.ReconnectMax)
	for attempt := 0; w.ctx.Err() == nil; attempt++ {
		ctx, cancel := context.WithTimeout(w.ctx, w.cfg.PublishTimeout)
		ack, err := cm.Subscribe(ctx, sub)
		cancel()
		if err == nil || ack != nil {
			failed := 0
			for i, rc := range ackReasons(ack) {
				// 0x91 (packet identifier in use) comes from brokers such as
				// mochi that check SUBSCRIBE IDs against their own in-flight
				// IDs after a session resume; the session kept the
				// subscription, so it is not fatal.
				if rc >= 0x80 && rc != 0x91 {
					failed++
					w.log.Error("MQTT subscription refused", "topic", w.filters[i], "reason_code", rc)
				}
			}
			if failed == 0 {
				w.log.Info("MQTT subscribed", "topics", w.filters)
				if stale := w.takeStale(""); len(stale) > 0 {
					// Before Ready: once a scoped bridge says it is ready,
					// its session no longer holds the unscoped filters (nor
					// those a failed unsubscribe left behind).
					w.removeStale(cm, stale)
				}
				w.subscribed.Store(true)
				return
			}
		} else {
			if errors.Is(err, autopaho.ConnectionDownError) {
				return // the next OnConnectionUp subscribes again
			}
			w.log.Warn("MQTT subscribe failed", "err", err, "attempt", attempt)
		}
		select {
		case <-time.After(backoff(attempt)):
		case <-w.ctx.Done():
		}
	}
}

// takeStale returns the filters through which an earlier scope could have
// delivered topic (StaleFilters; with topic "" the unscoped ones and those
// a failed unsubscribe left pending) that this connection has not
// unsubscribed yet, and marks them as done.
func (w *Worker) takeStale(topic string) []string {
	var todo []string
	w.staleMu.Lock()
	defer w.staleMu.Unlock()
	filters := bridge.StaleFilters(w.cfg.ShareGroup, w.cfg.OrgID, topic)
	if topic == "" {
		for f := range w.stalePending {
			filters = append(filters, f)
		}
		clear(w.stalePending)
	}
	for _, f := range filters {
		if !w.staleDone[f] {
			w.staleDone[f] = true
			todo = append(todo, f)
		}
	}
	return todo
}

// removeStale unsubscribes filters of an earlier scope; it blocks until
// the UNSUBACK. A failure (the connection went down) leaves them to the
// next subscribe, or the next message that comes through them.
func (w *Worker) removeStale(cm *autopaho.ConnectionManager, filters []string) {
	ctx, cancel := context.WithTimeout(w.ctx, w.cfg.PublishTimeout)
	defer cancel()
	ack, err := cm.Unsubscribe(ctx, &paho.Unsubscribe{Topics: filters})
	if err != nil {
		w.staleMu.Lock()
		for _, f := range filters {
			delete(w.staleDone, f)
			w.stalePending[f] = true
		}
		w.staleMu.Unlock()
		w.log.Warn("MQTT unsubscribe of an earlier scope's filters failed", "topics", filters, "err", err)
		return
	}
	for i, f := range filters {
		if ack != nil && i < len(ack.Reasons) && ack.Reasons[i] == 0 {
			w.log.Info("MQTT subscription of an earlier scope removed from the session", "topic", f)
		}
	}
}

// dropStale removes, on a goroutine the worker waits for in Stop, the
// filters of an earlier scope through which topic was just delivered.
func (w *Worker) dropStale(topic string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx.Err() != nil || w.cm == nil {
		return // stopping, or not started yet: the next such message tries again
	}
	todo := w.takeStale(topic)
	if len(todo) == 0 {
		return
	}
	cm := w.cm
	w.connWG.Add(1)
	go func() {
		defer w.connWG.Done()
		w.removeStale(cm, todo)
	}()
}

func ackReasons(a *paho.Suback) []byte {
	if a == nil {
		return nil
	}
	return a.Reasons
}
