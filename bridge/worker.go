package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// Write retry backoff while the backbone refuses: 100 ms doubling to 5 s.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
)

// Worker is one MQTT connection in the shared subscription: it receives
// events and replies, writes them to the sink and acknowledges each message
// only after the sink confirmed the write. It holds at most MaxInflight
// un-acked messages; when that many are waiting for the backbone it stops
// reading, and the broker stops sending.
type Worker struct {
	id       int
	clientID string
	cfg      *MQTTConfig
	sink     Sink
	log      *slog.Logger
	filters  []string
	subID    int       // ScopeSubscriptionID of the configured scope
	peers    []*Worker // the workers of this replica, itself included
	metrics  Metrics

	ctx    context.Context // cancelled by Stop once in-flight work is done or timed out
	cancel context.CancelFunc
	cm     *autopaho.ConnectionManager

	slots chan struct{} // one token per un-acked message
	stop  chan struct{} // closed when intake stops

	mu       sync.Mutex
	stopping bool
	inflight int
	idle     *sync.Cond              // signalled when inflight drops to 0
	retries  map[*flight]*time.Timer // writes waiting for their next attempt

	subscribed atomic.Bool
	subIDs     atomic.Bool // the broker of the current connection sends subscription identifiers

	staleMu   sync.Mutex
	staleDone map[string]bool        // filters of earlier scopes unsubscribed on this connection
	connWG    sync.WaitGroup         // subscribe goroutines
	lastWarn  atomic.Int64           // unix nanos of the last write-failure WARN
	connErr   atomic.Pointer[string] // why the last connection attempt failed; nil once connected
	certAsked atomic.Bool            // the broker requested a client certificate we do not have
}

// WorkerOption configures a Worker; NewReceiver passes its options to every
// worker.
type WorkerOption func(*Worker)

// WithMetrics makes the worker report what it receives, forwards, retries,
// dead-letters and acknowledges, its in-flight count and its connection
// state to m. Without it (or with nil) nothing is counted.
func WithMetrics(m Metrics) WorkerOption {
	return func(w *Worker) { w.metrics = m }
}

// flight is one received message from read to ack.
type flight struct {
	w       *Worker
	m       *Message
	pr      paho.PublishReceived
	attempt int
	reason  string // the dead-letter reason label once m.DeadLetter is set
}

// NewWorker creates worker id (1-based); Start connects it.
func NewWorker(id int, cfg *MQTTConfig, sink Sink, log *slog.Logger, opts ...WorkerOption) *Worker {
	w := &Worker{
		id:       id,
		clientID: fmt.Sprintf("%s-w%d", cfg.ClientID, id),
		cfg:      cfg,
		sink:     sink,
		filters:  SubscriptionFilters(cfg.ShareGroup, cfg.OrgID),
		subID:    ScopeSubscriptionID(cfg.OrgID),
		slots:    make(chan struct{}, cfg.MaxInflight),
		stop:     make(chan struct{}),
		retries:  make(map[*flight]*time.Timer),

		staleDone: make(map[string]bool),
	}
	w.peers = []*Worker{w}
	w.log = log.With("component", "worker", "worker", id, "client_id", w.clientID)
	w.idle = sync.NewCond(&w.mu)
	for _, o := range opts {
		o(w)
	}
	if w.metrics == nil {
		w.metrics = NopMetrics{}
	}
	w.metrics.MQTTConnected(w.clientID, false)
	w.metrics.TrackInflight(w.clientID, w.Inflight)
	return w
}

// ClientID is the worker's MQTT client ID, <MQTT_CLIENT_ID>-w<n>.
func (w *Worker) ClientID() string { return w.clientID }

// Ready reports whether the worker is connected and subscribed.
func (w *Worker) Ready() bool { return w.subscribed.Load() }

// ConnectError says why the last connection attempt failed (a refused TLS
// handshake, a bad password, a broker not listening), or "" once a
// connection succeeded. Readiness reports it.
func (w *Worker) ConnectError() string {
	if p := w.connErr.Load(); p != nil {
		return *p
	}
	return ""
}

// Inflight is the number of messages received and not yet acknowledged.
func (w *Worker) Inflight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.inflight
}

// Start opens the connection in the background; autopaho reconnects with
// the configured backoff until Stop. It fails only on a bad configuration.
func (w *Worker) Start(ctx context.Context) error {
	w.ctx, w.cancel = context.WithCancel(context.WithoutCancel(ctx))
	rm := uint16(w.cfg.MaxInflight)
	cc, err := w.cfg.clientConfig(w.clientID, rm, w.log)
	if err != nil {
		return err
	}
	if cc.TlsCfg != nil && len(cc.TlsCfg.Certificates) == 0 {
		// A broker that requires client certificates just drops a TLS 1.3
		// connection without one ("connection reset by peer"); noting its
		// request lets the error say what is missing.
		cc.TlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			w.certAsked.Store(true)
			return &tls.Certificate{}, nil
		}
	}
	cc.EnableManualAcknowledgment = true
	cc.SendAcksInterval = w.cfg.AckInterval
	cc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){w.onPublish}
	cc.OnConnectionUp = w.onConnectionUp
	cc.OnConnectionDown = func() bool {
		w.subscribed.Store(false)
		w.metrics.MQTTConnected(w.clientID, false)
		w.log.Warn("MQTT connection lost")
		return true
	}
	cc.OnConnectError = func(err error) {
		if w.certAsked.Swap(false) { // set by this attempt's handshake
			err = fmt.Errorf("%w (the broker asked for a client certificate and none is configured: set MQTT_CERT_FILE and MQTT_KEY_FILE)", err)
		}
		msg := err.Error()
		w.connErr.Store(&msg)
		w.log.Warn("MQTT connection attempt failed", "url", w.cfg.URL, "err", err)
	}
	cm, err := autopaho.NewConnection(w.ctx, cc)
	if err != nil {
		w.cancel()
		return fmt.Errorf("worker %s: %w", w.clientID, err)
	}
	w.mu.Lock() // dropStale may read it from a delivery that beat this line
	w.cm = cm
	w.mu.Unlock()
	return nil
}

func (w *Worker) onConnectionUp(cm *autopaho.ConnectionManager, ca *paho.Connack) {
	w.log.Info("MQTT connection established", "url", w.cfg.URL, "session_present", ca.SessionPresent)
	w.connErr.Store(nil)
	w.metrics.MQTTConnected(w.clientID, true)
	subIDs := ca.Properties != nil && ca.Properties.SubIDAvailable
	w.subIDs.Store(subIDs)
	w.staleMu.Lock()
	w.staleDone = make(map[string]bool)
	w.staleMu.Unlock()
	// Subscribing blocks until SUBACK, and OnConnectionUp must not block.
	w.connWG.Add(1)
	go func() {
		defer w.connWG.Done()
		w.subscribe(cm, subIDs)
	}()
}

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
	backoff := Backoff(w.cfg.ReconnectMin, w.cfg.ReconnectMax)
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
					// its session no longer holds the unscoped filters.
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
// delivered topic (StaleFilters; with topic "" the unscoped ones) that
// this connection has not unsubscribed yet, and marks them as done.
func (w *Worker) takeStale(topic string) []string {
	var todo []string
	w.staleMu.Lock()
	defer w.staleMu.Unlock()
	for _, f := range StaleFilters(w.cfg.ShareGroup, w.cfg.OrgID, topic) {
		if !w.staleDone[f] {
			w.staleDone[f] = true
			todo = append(todo, f)
		}
	}
	return todo
}

// removeStale unsubscribes filters of an earlier scope; it blocks until
// the UNSUBACK. A failure leaves them to be tried again by the next
// message that comes through them.
func (w *Worker) removeStale(cm *autopaho.ConnectionManager, filters []string) {
	ctx, cancel := context.WithTimeout(w.ctx, w.cfg.PublishTimeout)
	defer cancel()
	ack, err := cm.Unsubscribe(ctx, &paho.Unsubscribe{Topics: filters})
	if err != nil {
		w.staleMu.Lock()
		for _, f := range filters {
			delete(w.staleDone, f)
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

// onPublish runs on paho's single delivery goroutine. Blocking here while
// every slot is taken is the bridge's backpressure.
func (w *Worker) onPublish(pr paho.PublishReceived) (bool, error) {
	select {
	case w.slots <- struct{}{}:
	case <-w.stop:
		return true, nil // not acked: the broker redelivers it to this session
	}
	w.mu.Lock()
	if w.stopping {
		w.mu.Unlock()
		<-w.slots
		return true, nil
	}
	w.inflight++
	w.mu.Unlock()

	p := pr.Packet
	var contentType string
	var corr []byte
	var props []Property
	if p.Properties != nil {
		contentType, corr = p.Properties.ContentType, p.Properties.CorrelationData
		if n := len(p.Properties.User); n > 0 {
			props = make([]Property, n)
			for i, u := range p.Properties.User {
				props[i] = Property{Name: u.Key, Value: u.Value}
			}
		}
	}
	m := NewMessage(p.Topic, p.Payload, time.Now(), contentType, corr, props)
	w.metrics.MessageReceived(m.Kind)
	f := &flight{w: w, m: m, pr: pr}
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
	if !InScope(p.Topic, w.cfg.OrgID) {
		m.DeadLetter = fmt.Sprintf("topic %s is outside ORG_ID %s", headerSafe(p.Topic), w.cfg.OrgID)
		f.reason = ReasonOutOfScope
		w.log.Warn("dead-lettering message", "topic", headerSafe(m.Topic), "reason", m.DeadLetter)
	} else if m.DeadLetter != "" {
		f.reason = deadLetterReason(m)
		w.log.Warn("dead-lettering message", "topic", headerSafe(m.Topic), "reason", m.DeadLetter)
	} else if w.log.Enabled(w.ctx, slog.LevelDebug) {
		w.log.Debug("message received", "topic", m.Topic, "bytes", len(m.Payload))
	}
	w.sink.Write(w.ctx, m, f.done)
	return true, nil
}

// done is the sink's completion callback: ack on success, dead-letter on a
// permanent error, otherwise retry with backoff while the message stays
// un-acked.
func (f *flight) done(err error) {
	w := f.w
	if err == nil {
		if f.m.DeadLetter != "" {
			w.metrics.DeadLettered(f.reason)
		} else {
			w.metrics.MessageForwarded(f.m.Kind, time.Since(f.m.ReceivedAt))
		}
		f.ack()
		w.release()
		return
	}
	if w.ctx.Err() != nil {
		w.release() // shutting down: not acked, redelivered to this session later
		return
	}
	w.metrics.WriteError()
	if errors.Is(err, ErrPermanent) {
		if f.m.DeadLetter == "" {
			f.m.DeadLetter = err.Error()
			f.reason = ReasonOf(err)
			w.log.Warn("dead-lettering message", "topic", f.m.Topic, "reason", f.m.DeadLetter)
			// Written from a timer goroutine, not from here: done runs on
			// the sink's completion path, and a Write there could wait for
			// a window slot that only this path frees.
			f.schedule(0)
			return
		}
		// Even the dead letter (already cut to fit) cannot be written. This
		// log line is where the message ends up; holding it would stop every
		// later PUBACK of this worker for good.
		w.log.Error("dead letter refused by the backbone, message dropped", "topic", headerSafe(f.m.Topic),
			"reason", f.m.DeadLetter, "bytes", len(f.m.Payload), "err", err)
		f.ack()
		w.release()
		return
	}
	f.attempt++
	now := time.Now().UnixNano()
	if last := w.lastWarn.Load(); now-last > int64(5*time.Second) && w.lastWarn.CompareAndSwap(last, now) {
		w.log.Warn("backbone write failed, retrying", "topic", f.m.Topic, "attempt", f.attempt, "err", err)
	}
	f.schedule(Backoff(retryMin, retryMax)(f.attempt - 1))
	w.metrics.WriteRetry()
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

// schedule writes the message again after d, unless Stop comes first.
func (f *flight) schedule(d time.Duration) {
	w := f.w
	w.mu.Lock()
	if w.ctx.Err() != nil {
		w.mu.Unlock()
		w.release()
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
		return // Stop took it over
	}
	w.sink.Write(w.ctx, f.m, f.done)
}

func (w *Worker) release() {
	<-w.slots
	w.mu.Lock()
	w.inflight--
	if w.inflight == 0 {
		w.idle.Broadcast()
	}
	w.mu.Unlock()
}

// Stop stops intake, waits until every in-flight message is written and its
// PUBACK sent (or ctx ends; what is left is not acked and the broker
// redelivers it), then disconnects cleanly so the broker keeps the session.
func (w *Worker) Stop(ctx context.Context) error {
	if w.cm == nil {
		return nil
	}
	w.mu.Lock()
	if !w.stopping {
		w.stopping = true
		close(w.stop)
	}
	w.mu.Unlock()

	waited := make(chan struct{})
	go func() {
		w.mu.Lock()
		for w.inflight > 0 && w.ctx.Err() == nil {
			w.idle.Wait()
		}
		w.mu.Unlock()
		close(waited)
	}()
	select {
	case <-waited:
		// paho sends manual acks on its ticker: give it two ticks.
		select {
		case <-time.After(2 * w.cfg.AckInterval):
		case <-ctx.Done():
		}
	case <-ctx.Done():
		w.log.Warn("shutdown timeout: messages left un-acked for redelivery", "inflight", w.Inflight())
	}

	w.mu.Lock()
	w.cancel()
	for f, t := range w.retries {
		if t.Stop() {
			delete(w.retries, f)
			defer w.release()
		}
	}
	w.idle.Broadcast()
	w.mu.Unlock()
	<-waited

	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	err := w.cm.Disconnect(dctx)
	w.connWG.Wait()
	w.subscribed.Store(false)
	w.metrics.MQTTConnected(w.clientID, false)
	if err != nil {
		return fmt.Errorf("disconnect %s: %w", w.clientID, err)
	}
	w.log.Info("MQTT disconnected")
	return nil
}
