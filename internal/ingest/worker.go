package ingest

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/ratelog"
	"github.com/nr-bridge/nr-bridge/internal/redact"
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
	cfg      *mqttconn.Config
	sink     bridge.Sink
	log      *slog.Logger
	filters  []string
	subID    int       // ScopeSubscriptionID of the configured scope
	peers    []*Worker // the workers of this replica, itself included
	metrics  bridge.Metrics

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
	writeWarn  *ratelog.Limiter       // the write-failure WARN, at most every 5 s
	connFails  ratelog.Failures       // failed connection attempts, rate-limited
	takeover   mqttconn.Takeover      // the broker gave this session to another client
	rx         rxCounter              // messages received, for the starvation watch (starve.go)
	connErr    atomic.Pointer[string] // why the last connection attempt failed; nil once connected
	certAsked  atomic.Bool            // the broker requested a client certificate we do not have

	staleMu   sync.Mutex
	staleDone map[string]bool // filters of earlier scopes unsubscribed on this connection
	// stalePending are filters of earlier scopes whose unsubscribe failed
	// (the connection was down): removed at the next subscribe.
	stalePending map[string]bool
}

// progress is what a worker stored of one kind of message (events and
// replies go to different streams or topics): it tells a message that
// fails alone (poison) from a backbone that takes nothing.
type progress struct {
	count   uint64 // messages stored
	highest uint64 // the highest receive sequence stored
	at      uint64 // count when highest was stored
}

func kindIndex(k bridge.Kind) int {
	if k == bridge.KindReply {
		return 1
	}
	return 0
}

// flight is one received message from read to ack.
type flight struct {
	w       *Worker
	m       *bridge.Message
	pr      paho.PublishReceived
	seq     uint64 // receive order on its worker, from 1
	attempt int    // failed attempts since the last change of what is written
	// failMark is the worker's stored count of m's kind at m's first failed
	// write; a later message stored after it counts toward poison.
	failMark uint64
	failed   bool
	lastErr  error // the last write error, for the stall report; under w.mu
	tries    int   // attempt as of lastErr, for the stall report; under w.mu

	prev, next *flight // the worker's un-acked messages in receive order; under w.mu
}

// NewWorker creates worker id (1-based); Start connects it. m receives
// what it receives, forwards, retries, dead-letters and acknowledges, its
// in-flight count and its connection state; nil counts nothing.
func NewWorker(id int, cfg *mqttconn.Config, sink bridge.Sink, log *slog.Logger, m bridge.Metrics) *Worker {
	w := &Worker{
		id:       id,
		clientID: fmt.Sprintf("%s-w%d", cfg.ClientID, id),
		cfg:      cfg,
		sink:     sink,
		filters:  bridge.SubscriptionFilters(cfg.ShareGroup, cfg.OrgID),
		subID:    bridge.ScopeSubscriptionID(cfg.OrgID),
		slots:    make(chan struct{}, cfg.MaxInflight),
		stop:     make(chan struct{}),
		retries:  make(map[*flight]*time.Timer),

		writeWarn: ratelog.New(5 * time.Second),

		staleDone:    make(map[string]bool),
		stalePending: make(map[string]bool),
	}
	w.peers = []*Worker{w}
	w.log = log.With("component", "worker", "worker", id, "client_id", w.clientID)
	w.idle = sync.NewCond(&w.mu)
	w.metrics = m
	if w.metrics == nil {
		w.metrics = bridge.NopMetrics{}
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

// Ready reports whether the worker is connected and subscribed, and has
// not lost its session to another client with its client ID in the last
// 30 s (two bridges with one client ID are each connected only briefly).
func (w *Worker) Ready() bool { return w.subscribed.Load() && w.takeover.Err() == nil }

// ConnectError says why the last connection attempt failed (a refused TLS
// handshake, a bad password, a broker not listening) or that another client
// took the session over, or "" once a connection succeeded. Readiness
// reports it.
func (w *Worker) ConnectError() string {
	if err := w.takeover.Err(); err != nil {
		return err.Error()
	}
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
// the configured backoff until Close. It fails only on a bad configuration.
func (w *Worker) Start(ctx context.Context) error {
	w.ctx, w.cancel = context.WithCancel(context.WithoutCancel(ctx))
	rm := w.cfg.ReceiveMax()
	cc, err := w.cfg.ClientConfig(w.clientID, rm, w.log)
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
		w.takeover.Down(w.clientID, w.log)
		if w.takeover.Err() != nil {
			w.log.Debug("MQTT connection lost") // the takeover WARN said why
		} else {
			w.log.Warn("MQTT connection lost")
		}
		return true
	}
	cc.OnConnectError = func(err error) {
		if w.certAsked.Swap(false) { // set by this attempt's handshake
			err = fmt.Errorf("%w (the broker asked for a client certificate and none is configured: set MQTT_CERT_FILE and MQTT_KEY_FILE)", err)
		}
		msg := err.Error()
		w.connErr.Store(&msg)
		w.connFails.Failed(w.log, "MQTT connection attempt failed", err, "url", redact.URLs(w.cfg.URL))
	}
	cc.OnServerDisconnect = w.takeover.OnServerDisconnect(w.clientID, w.log)
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
	w.log.Info("MQTT connection established", "url", redact.URLs(w.cfg.URL), "session_present", ca.SessionPresent)
	w.connErr.Store(nil)
	w.connFails.Reset()
	w.takeover.Up()
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

// Close stops intake, waits until every in-flight message is written and its
// PUBACK sent (or ctx ends; what is left is not acked and the broker
// redelivers it), then disconnects cleanly so the broker keeps the session.
func (w *Worker) Close(ctx context.Context) error {
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
		// Disconnect (patched paho) sends the PUBACKs of what is written.
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
