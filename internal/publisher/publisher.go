package publisher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/ratelog"
	"github.com/nr-bridge/nr-bridge/internal/redact"
)

// ContentTypeJSON is the MQTT v5 content type of every published command.
const ContentTypeJSON = "application/json"

// Publisher is the single validating publisher: the only code that
// publishes commands to MQTT. It has its own connection, client ID
// <MQTT_CLIENT_ID>-pub, and checks every command again right before it goes
// out (target IDs, ORG_ID scope, remaining TTL), whichever source it came
// from. It is safe for concurrent use.
//
// Its MQTT session ends at disconnect (session expiry 0), unlike the
// workers': a command whose PUBACK did not arrive is not resent later by the
// library with its original, by then stale, message expiry. The caller
// decides instead: a source retries with the TTL recomputed, an HTTP client
// gets a 503.
type Publisher struct {
	cfg      *mqttconn.Config
	log      *slog.Logger
	clientID string
	now      func() time.Time

	cm        atomic.Pointer[autopaho.ConnectionManager]
	cancel    context.CancelFunc // stops the connection loop
	connected atomic.Bool
	connFails ratelog.Failures  // failed connection attempts, rate-limited
	takeover  mqttconn.Takeover // the broker gave this session to another client

	// abort is cancelled when Stop gives up waiting: Publish calls still
	// waiting for their PUBACK then return at once.
	abort       context.Context
	abortCancel context.CancelFunc

	observer bridge.PublishObserver  // command tracking; nil: none (see Observe)
	metrics  bridge.PublisherMetrics // never nil (NopMetrics by default)

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup // Publish calls in progress
}

// New returns a publisher for cfg's broker; Start connects it. m counts
// its commands (published with their latency, refused by reason) and its
// connection state; nil counts nothing.
func New(cfg *mqttconn.Config, log *slog.Logger, m bridge.PublisherMetrics) *Publisher {
	if m == nil {
		m = bridge.NopMetrics{}
	}
	clientID := cfg.ClientID + "-pub"
	abort, abortCancel := context.WithCancel(context.Background())
	return &Publisher{
		cfg:         cfg,
		log:         log.With("component", "publisher", "client_id", clientID),
		clientID:    clientID,
		now:         time.Now,
		abort:       abort,
		abortCancel: abortCancel,
		metrics:     m,
	}
}

// Observe makes the publisher report every command that passed its checks
// to o: accepted right before the publish, then published or failed (see
// bridge.PublishObserver; Tracker implements it). Call it before Start; it is not
// safe to call while commands are published.
func (p *Publisher) Observe(o bridge.PublishObserver) { p.observer = o }

// ClientID is the publisher's MQTT client ID, <MQTT_CLIENT_ID>-pub.
func (p *Publisher) ClientID() string { return p.clientID }

// Start opens the connection in the background; autopaho reconnects with
// the MQTT_RECONNECT_MIN/MAX backoff until Close. It does not wait for the
// broker (see Ready) and fails only on a bad configuration or a second call.
func (p *Publisher) Start(ctx context.Context) error {
	// The receive maximum only sizes the inbound queue: the publisher
	// subscribes to nothing.
	cc, err := p.cfg.ClientConfig(p.clientID, 16, p.log)
	if err != nil {
		return err
	}
	cc.CleanStartOnInitialConnection = true
	cc.SessionExpiryInterval = 0
	cc.OnConnectionUp = func(_ *autopaho.ConnectionManager, _ *paho.Connack) {
		p.connected.Store(true)
		p.metrics.MQTTConnected(p.clientID, true)
		p.log.Info("MQTT connection established", "url", redact.URLs(p.cfg.URL))
		p.connFails.Reset()
		p.takeover.Up()
	}
	cc.OnConnectionDown = func() bool {
		p.connected.Store(false)
		p.metrics.MQTTConnected(p.clientID, false)
		p.takeover.Down(p.clientID, p.log)
		if p.takeover.Err() != nil {
			p.log.Debug("MQTT connection lost") // the takeover WARN said why
		} else {
			p.log.Warn("MQTT connection lost")
		}
		return true
	}
	cc.OnConnectError = func(err error) {
		p.connFails.Failed(p.log, "MQTT connection attempt failed", err, "url", redact.URLs(p.cfg.URL))
	}
	cc.OnServerDisconnect = p.takeover.OnServerDisconnect(p.clientID, p.log)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.cm.Load() != nil {
		return fmt.Errorf("start publisher %s: %w", p.clientID, bridge.ErrClosed)
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cm, err := autopaho.NewConnection(cctx, cc)
	if err != nil {
		cancel()
		return fmt.Errorf("start publisher %s: %w", p.clientID, err)
	}
	p.cancel = cancel
	p.cm.Store(cm)
	return nil
}

// Ready returns nil while the connection to the broker is up, else an error
// wrapping ErrNotConnected (or ErrClosed after Close).
func (p *Publisher) Ready() error {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	switch {
	case closed:
		return fmt.Errorf("publisher %s: %w", p.clientID, bridge.ErrClosed)
	case !p.connected.Load():
		if err := p.takeover.Err(); err != nil {
			return fmt.Errorf("publisher %s: %w: %w", p.clientID, bridge.ErrNotConnected, err)
		}
		return fmt.Errorf("publisher %s: %w", p.clientID, bridge.ErrNotConnected)
	case p.takeover.Err() != nil:
		return fmt.Errorf("publisher %s: %w", p.clientID, p.takeover.Err())
	}
	return nil
}

// Publish publishes command c to target t at QoS 1, not retained, with the
// MQTT v5 properties message expiry (the remaining TTL rounded up to whole
// seconds, at least 1), content type application/json, correlation data
// (c.CorrelationID) and, for a node command, response topic
// org/<org>/node/<node>/reply. The payload is c.Raw(), the document as
// received. source (SourceHTTP, SourceStream) is for the logs.
//
// It validates again first: t's IDs (error wrapping ErrInvalidID and
// ErrInvalidTarget), ORG_ID scope (ErrOutOfScope) and the TTL left now
// (ErrExpired). Then it makes one attempt and blocks until the broker's
// PUBACK, at most MQTT_PUBLISH_TIMEOUT or until ctx ends. Errors:
// ErrNotConnected (also matching autopaho.ConnectionDownError) while the
// connection is down, ErrPublishTimeout when no PUBACK came in time (the
// command may still be delivered), *RefusedError for a reason code >= 0x80,
// ErrClosed after Close, and ctx.Err() wrapped when ctx ended first. A PUBACK
// with 0x10 (no matching subscribers) is a success. Retrying is the caller's
// decision: see Retryable.
func (p *Publisher) Publish(ctx context.Context, t bridge.Target, c bridge.Command, source string) (bridge.PublishResult, error) {
	start := time.Now()
	res, err := p.publish(ctx, t, c, source)
	if err != nil {
		p.metrics.CommandRefused(source, bridge.ReasonOf(err))
	} else {
		p.metrics.CommandPublished(source, time.Since(start))
	}
	return res, err
}

func (p *Publisher) publish(ctx context.Context, t bridge.Target, c bridge.Command, source string) (bridge.PublishResult, error) {
	log := p.log.With("source", source, "org", t.Org, "node", t.Node, "correlation_id", c.CorrelationID)
	if err := bridge.CheckScope(t, p.cfg.OrgID); err != nil {
		what := "command" // a target with a bad ID has no topic
		if errors.Is(err, bridge.ErrOutOfScope) {
			what = t.MQTTTopic()
		}
		err = fmt.Errorf("publish %s: %w", what, err)
		log.Warn("command refused", "err", err)
		return bridge.PublishResult{}, err
	}
	topic := t.MQTTTopic()
	log = log.With("topic", topic)
	if c.Raw() == nil || c.CorrelationID == "" {
		return bridge.PublishResult{}, fmt.Errorf("publish %s: command not built by ParseCommand", topic)
	}
	remaining := c.Remaining(p.now())
	if remaining <= 0 {
		err := fmt.Errorf("publish %s: %w at %s, %s ago", topic, bridge.ErrExpired, c.ExpiresAt().Format(time.RFC3339), (-remaining).Truncate(time.Millisecond))
		log.Warn("command refused", "err", err)
		return bridge.PublishResult{}, err
	}

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return bridge.PublishResult{}, fmt.Errorf("publish %s: %w", topic, bridge.ErrClosed)
	}
	p.inflight.Add(1)
	p.mu.Unlock()
	defer p.inflight.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(p.abort, cancel)()

	cm := p.cm.Load()
	if cm == nil {
		return bridge.PublishResult{}, fmt.Errorf("publish %s: %w: publisher not started", topic, bridge.ErrNotConnected)
	}
	if p.observer != nil {
		p.observer.CommandAccepted(t, c, source)
	}
	expiry := messageExpiry(remaining)
	pub := &paho.Publish{
		QoS:     1,
		Topic:   topic,
		Payload: c.Raw(),
		Properties: &paho.PublishProperties{
			MessageExpiry:   &expiry,
			ContentType:     ContentTypeJSON,
			CorrelationData: []byte(c.CorrelationID),
			ResponseTopic:   t.ReplyTopic(),
		},
	}
	resp, err := cm.Publish(ctx, pub)
	if err == nil {
		res := bridge.PublishResult{Topic: topic}
		if resp != nil {
			res.ReasonCode = resp.ReasonCode
		}
		log.Info("command published", "length", len(pub.Payload), "expiry_sec", expiry, "reason_code", res.ReasonCode)
		if p.observer != nil {
			p.observer.CommandPublished(t, c, source, res)
		}
		return res, nil
	}
	err = p.publishError(ctx, topic, resp, err)
	if p.observer != nil {
		p.observer.CommandFailed(t, c, source, err)
	}
	var refused *bridge.RefusedError
	switch {
	case errors.As(err, &refused):
		log.Warn("command refused", "err", err)
	case errors.Is(err, bridge.ErrPublishTimeout):
		log.Warn("command publish timed out", "err", err)
	default:
		log.Debug("command not published", "err", err)
	}
	return bridge.PublishResult{}, err
}

// publishError classifies a failed cm.Publish.
func (p *Publisher) publishError(ctx context.Context, topic string, resp *paho.PublishResponse, err error) error {
	if resp != nil && resp.ReasonCode >= 0x80 {
		refused := &bridge.RefusedError{Topic: topic, ReasonCode: resp.ReasonCode}
		if resp.Properties != nil {
			refused.Reason = resp.Properties.ReasonString
		}
		return refused
	}
	switch {
	case errors.Is(err, autopaho.ConnectionDownError), errors.Is(err, session.ErrNoConnection):
		return fmt.Errorf("publish %s: %w: %w", topic, bridge.ErrNotConnected, err)
	case p.abort.Err() != nil:
		return fmt.Errorf("publish %s: %w: shut down before the PUBACK", topic, bridge.ErrClosed)
	case ctx.Err() != nil:
		// The caller gave up (or is shutting down); the broker may still
		// get the command.
		return fmt.Errorf("publish %s: %w", topic, ctx.Err())
	case errors.Is(err, context.DeadlineExceeded):
		// paho bounds the wait (and the wait for a send slot) with
		// PacketTimeout, whatever ctx says.
		return fmt.Errorf("publish %s: %w (%s)", topic, bridge.ErrPublishTimeout, p.cfg.PublishTimeout)
	}
	if p.Ready() != nil {
		// paho's "not fully acknowledged at time of shutdown" and similar.
		return fmt.Errorf("publish %s: %w: %w", topic, bridge.ErrNotConnected, err)
	}
	return fmt.Errorf("publish %s: %w", topic, err)
}

// messageExpiry is the MQTT message expiry for a remaining TTL: whole
// seconds rounded up, so the command never expires at the broker before its
// TTL, and at least 1, since 0 would mean "never expires".
func messageExpiry(remaining time.Duration) uint32 {
	sec := (remaining + time.Second - 1) / time.Second
	switch {
	case sec < 1:
		return 1
	case sec > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(sec)
}

// Close refuses new commands (ErrClosed), waits until the Publish calls in
// progress have their PUBACK or error (until ctx ends; those still waiting
// then return ErrClosed, and the broker may or may not have the command),
// then disconnects cleanly. Calling it again is a no-op.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()

	waited := make(chan struct{})
	go func() {
		p.inflight.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-ctx.Done():
		p.log.Warn("shutdown timeout: commands still waiting for their PUBACK")
	}
	p.abortCancel()
	<-waited

	cm := p.cm.Load()
	if cm == nil {
		return nil
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	err := cm.Disconnect(dctx)
	p.cancel()
	p.connected.Store(false)
	p.metrics.MQTTConnected(p.clientID, false)
	if err != nil && !errors.Is(err, autopaho.ConnectionDownError) {
		return fmt.Errorf("disconnect %s: %w", p.clientID, err)
	}
	p.log.Info("MQTT disconnected")
	return nil
}
