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

// poisonAttempts is how many transient failures of one message, while
// messages received after it on the same worker were written, make it
// poison (dead-lettered with ErrPoison). Three rules out a failure that
// merely raced a reconnect; with the retry backoff it takes about 300 ms.
const poisonAttempts = 3

// defaultStallTimeout is MQTT_STALL_TIMEOUT's default, used when the
// configuration leaves it 0.
const defaultStallTimeout = 2 * time.Minute

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
	seq      uint64                  // receive sequence of the last message read
	head     *flight                 // the oldest un-acked message; PUBACKs wait behind it
	tail     *flight                 // the newest un-acked message
	written  [2]progress             // what was stored, by kindIndex

	subscribed atomic.Bool
	subIDs     atomic.Bool            // the broker of the current connection sends subscription identifiers
	connWG     sync.WaitGroup         // subscribe and unsubscribe goroutines
	watchWG    sync.WaitGroup         // the stall watchdog
	stallAfter time.Duration          // MQTT_STALL_TIMEOUT
	lastWarn   atomic.Int64           // unix nanos of the last write-failure WARN
	connErr    atomic.Pointer[string] // why the last connection attempt failed; nil once connected
	certAsked  atomic.Bool            // the broker requested a client certificate we do not have
	rx         rxCounter              // messages received, for the starvation watch (starve.go)

	staleMu   sync.Mutex
	staleDone map[string]bool // filters of earlier scopes unsubscribed on this connection
	// stalePending are filters of earlier scopes whose unsubscribe failed
	// (the connection was down): removed at the next subscribe.
	stalePending map[string]bool
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

// progress is what a worker stored of one kind of message (events and
// replies go to different streams or topics): it tells a message that
// fails alone (poison) from a backbone that takes nothing.
type progress struct {
	count   uint64 // messages stored
	highest uint64 // the highest receive sequence stored
	at      uint64 // count when highest was stored
}

func kindIndex(k Kind) int {
	if k == KindReply {
		return 1
	}
	return 0
}

// flight is one received message from read to ack.
type flight struct {
	w       *Worker
	m       *Message
	pr      paho.PublishReceived
	seq     uint64 // receive order on its worker, from 1
	attempt int    // failed attempts since the last change of what is written
	reason  string // the dead-letter reason label once m.DeadLetter is set
	// failMark is the worker's stored count of m's kind at m's first failed
	// write; a later message stored after it counts toward poison.
	failMark uint64
	failed   bool
	lastErr  error // the last write error, for the stall report; under w.mu
	tries    int   // attempt as of lastErr, for the stall report; under w.mu

	prev, next *flight // the worker's un-acked messages in receive order; under w.mu
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

		staleDone:    make(map[string]bool),
		stalePending: make(map[string]bool),
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
	w.metrics.TrackOldestInflight(w.clientID, func() time.Duration {
		age, _, _, _ := w.oldest()
		return age
	})
	w.stallAfter = cfg.StallTimeout
	if w.stallAfter <= 0 {
		w.stallAfter = defaultStallTimeout
	}
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
	rm := w.cfg.receiveMaximum()
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
		w.log.Warn("MQTT connection attempt failed", "url", RedactURLs(w.cfg.URL), "err", err)
	}
	cm, err := autopaho.NewConnection(w.ctx, cc)
	if err != nil {
		w.cancel()
		return fmt.Errorf("worker %s: %w", w.clientID, err)
	}
	w.mu.Lock() // dropStale may read it from a delivery that beat this line
	w.cm = cm
	w.mu.Unlock()
	w.watchWG.Add(1)
	go func() {
		defer w.watchWG.Done()
		w.watchStall()
	}()
	return nil
}

func (w *Worker) onConnectionUp(cm *autopaho.ConnectionManager, ca *paho.Connack) {
	w.log.Info("MQTT connection established", "url", RedactURLs(w.cfg.URL), "session_present", ca.SessionPresent)
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
	filters := StaleFilters(w.cfg.ShareGroup, w.cfg.OrgID, topic)
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
		w.metrics.PropertiesDropped(DropReserved, m.Dropped)
		if w.log.Enabled(w.ctx, slog.LevelDebug) {
			w.log.Debug("reserved user properties dropped", "topic", headerSafe(m.Topic), "dropped", m.Dropped)
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
			w.metrics.DeadLettered(f.reason)
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
	permanent := errors.Is(err, ErrPermanent)
	switch {
	case permanent && f.m.DeadLetter == "":
		f.deadLetter(err)
		return
	case permanent && !f.m.MinimalDeadLetter:
		// The dead letter was cut to the backbone's limit and still
		// refused (a lower limit on the dead-letter stream, a header the
		// backbone will not take): write what is left of it at its
		// minimum.
		w.log.Error("dead letter refused by the backbone, writing it cut to its minimum", "topic", headerSafe(f.m.Topic),
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
		f.deadLetter(fmt.Errorf("%w (%d attempts; last error: %w)", ErrPoison, f.attempt, err))
		return
	}
	now := time.Now().UnixNano()
	if last := w.lastWarn.Load(); now-last > int64(5*time.Second) && w.lastWarn.CompareAndSwap(last, now) {
		if permanent {
			w.log.Error("minimal dead letter refused by the backbone, retrying; the worker cannot acknowledge until it is written",
				"topic", headerSafe(f.m.Topic), "reason", f.m.DeadLetter, "attempt", f.attempt, "err", err)
		} else {
			w.log.Warn("backbone write failed, retrying", "topic", headerSafe(f.m.Topic), "attempt", f.attempt, "err", err)
		}
	}
	f.schedule(Backoff(retryMin, retryMax)(f.attempt-1), err)
	w.metrics.WriteRetry()
}

// deadLetter turns f into a dead letter with err (which wraps ErrPermanent)
// as its reason and writes it.
func (f *flight) deadLetter(err error) {
	w := f.w
	f.m.DeadLetter = ReasonLine(err)
	f.reason = ReasonOf(err)
	f.attempt = 0
	w.log.Warn("dead-lettering message", "topic", headerSafe(f.m.Topic), "reason", f.m.DeadLetter)
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

// schedule writes the message again after d, unless Stop comes first;
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
		return // Stop took it over
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
	msg := fmt.Sprintf("%s: no acknowledgement for %s, oldest un-acked message on topic %s", w.clientID, age.Round(time.Second), headerSafe(topic))
	if lastErr != nil {
		msg += fmt.Sprintf(" (%d failed attempts, last error: %s)", attempt, ReasonLine(lastErr))
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
			"topic", headerSafe(topic), "waiting", age.Round(time.Millisecond).String(), "attempt", attempt,
			"inflight", w.Inflight(), "err", lastErr)
	}
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
			defer w.release(f, false)
		}
	}
	w.idle.Broadcast()
	w.mu.Unlock()
	<-waited

	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	err := w.cm.Disconnect(dctx)
	w.connWG.Wait()
	w.watchWG.Wait()
	w.subscribed.Store(false)
	w.metrics.MQTTConnected(w.clientID, false)
	if err != nil {
		return fmt.Errorf("disconnect %s: %w", w.clientID, err)
	}
	w.log.Info("MQTT disconnected")
	return nil
}
