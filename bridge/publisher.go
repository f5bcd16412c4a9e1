package bridge

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
	"github.com/nr-bridge/nr-bridge/internal/redact"
)

// ErrOutOfScope means a command targets another org than ORG_ID. The bridge
// is scoped to one organization and never publishes outside it: over HTTP it
// is a 403, from a stream the message is dead-lettered.
var ErrOutOfScope = errors.New("command outside the bridge's ORG_ID")

// ErrPublishTimeout means the broker did not acknowledge a command (PUBACK)
// within MQTT_PUBLISH_TIMEOUT. The outcome is unknown: the broker may still
// deliver the command, so a retry can deliver it twice (agents dedupe on the
// correlation data). Over HTTP it is a 503; a source retries.
var ErrPublishTimeout = errors.New("no PUBACK from the broker in time")

// ContentTypeJSON is the MQTT v5 content type of every published command.
const ContentTypeJSON = "application/json"

// Reason codes a PUBACK can carry that the bridge looks at.
const (
	// ReasonNoMatchingSubscribers (0x10) is a success: the broker accepted
	// the command but no client is subscribed to its topic right now.
	ReasonNoMatchingSubscribers byte = 0x10
)

// RefusedError is a PUBACK with a reason code >= 0x80: the broker refused
// the command. Temporary says whether another attempt later may succeed.
type RefusedError struct {
	// Topic is the MQTT topic the command was published to.
	Topic string
	// ReasonCode is the PUBACK reason code, e.g. 0x87 (not authorized).
	ReasonCode byte
	// Reason is the broker's reason string, when it sent one.
	Reason string
}

// Error says which topic was refused and why, e.g.
// "broker refused org/o1/node/n1/cmd: reason code 0x87 (not authorized)".
func (e *RefusedError) Error() string {
	s := fmt.Sprintf("broker refused %s: reason code 0x%02x (%s)", e.Topic, e.ReasonCode, pubackReasonName(e.ReasonCode))
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Temporary reports whether the refusal may pass: 0x97 quota exceeded, 0x91
// packet identifier in use, 0x80 unspecified error and 0x83 implementation
// specific error (brokers use these two for internal trouble such as a full
// store). 0x87 not authorized, 0x90 topic name invalid, 0x99 payload format
// invalid and anything else are permanent for this command.
func (e *RefusedError) Temporary() bool {
	switch e.ReasonCode {
	case 0x80, 0x83, 0x91, 0x97:
		return true
	}
	return false
}

func pubackReasonName(rc byte) string {
	switch rc {
	case 0x80:
		return "unspecified error"
	case 0x83:
		return "implementation specific error"
	case 0x87:
		return "not authorized"
	case 0x90:
		return "topic name invalid"
	case 0x91:
		return "packet identifier in use"
	case 0x97:
		return "quota exceeded"
	case 0x99:
		return "payload format invalid"
	}
	return "unknown"
}

// Retryable reports whether a command that failed with err (from
// ParseCommand, ParseCommandSubject/Key or Publish) may succeed if tried
// again later: false for a malformed or invalid command or target, an
// expired command, one outside ORG_ID and a permanent broker refusal; true
// for everything else (not connected, timeout, temporary refusal, shutdown
// or an unexpected error), because a source must never drop a command it
// could still deliver. Sources use it to choose between retrying (until the
// TTL runs out) and dead-lettering.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var refused *RefusedError
	if errors.As(err, &refused) {
		return refused.Temporary()
	}
	for _, perm := range []error{ErrMalformed, ErrInvalidCommand, ErrExpired, ErrInvalidTarget, ErrInvalidID, ErrOutOfScope} {
		if errors.Is(err, perm) {
			return false
		}
	}
	return true
}

// PublishResult is what the broker said about a published command.
type PublishResult struct {
	// Topic is the MQTT topic the command was published to.
	Topic string
	// ReasonCode is the PUBACK reason code: 0x00 success, or 0x10
	// (ReasonNoMatchingSubscribers) when no client subscribes to the topic.
	ReasonCode byte
}

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
	cfg      *MQTTConfig
	limits   CommandLimits
	log      *slog.Logger
	clientID string
	now      func() time.Time

	cm        atomic.Pointer[autopaho.ConnectionManager]
	cancel    context.CancelFunc // stops the connection loop
	connected atomic.Bool

	// abort is cancelled when Stop gives up waiting: Publish calls still
	// waiting for their PUBACK then return at once.
	abort       context.Context
	abortCancel context.CancelFunc

	observer PublishObserver  // command tracking; nil: none (see Observe)
	metrics  PublisherMetrics // never nil (NopMetrics by default)

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup // Publish calls in progress
}

// NewPublisher returns a publisher for cfg's broker; Start connects it.
// limits are the command limits the sources and the HTTP API parse with (see
// Limits); zero fields take their defaults.
func NewPublisher(cfg *MQTTConfig, limits CommandLimits, log *slog.Logger) *Publisher {
	clientID := cfg.ClientID + "-pub"
	abort, abortCancel := context.WithCancel(context.Background())
	return &Publisher{
		cfg:         cfg,
		limits:      limits.withDefaults(),
		log:         log.With("component", "publisher", "client_id", clientID),
		clientID:    clientID,
		now:         time.Now,
		abort:       abort,
		abortCancel: abortCancel,
		metrics:     NopMetrics{},
	}
}

// SetMetrics makes the publisher count its commands (published with their
// latency, refused by reason) and its connection state in m. Call it before
// Start.
func (p *Publisher) SetMetrics(m PublisherMetrics) {
	if m != nil {
		p.metrics = m
	}
}

// Refused counts a command from source that was refused before it reached
// Publish (a body that does not parse, a bad subject or key). Publish counts
// its own refusals.
func (p *Publisher) Refused(source string, err error) {
	p.metrics.CommandRefused(source, ReasonOf(err))
}

// DeadLettered counts a command a source wrote to the dead-letter
// subject or topic because of err.
func (p *Publisher) DeadLettered(err error) {
	p.metrics.DeadLettered(ReasonOf(err))
}

// Observe makes the publisher report every command that passed its checks
// to o: accepted right before the publish, then published or failed (see
// PublishObserver; Tracker implements it). Call it before Start; it is not
// safe to call while commands are published.
func (p *Publisher) Observe(o PublishObserver) { p.observer = o }

// ClientID is the publisher's MQTT client ID, <MQTT_CLIENT_ID>-pub.
func (p *Publisher) ClientID() string { return p.clientID }

// OrgID is the bridge's scope, ORG_ID ("" when unscoped): the commands
// sources derive the name they share with the replicas of the same scope
// from it.
func (p *Publisher) OrgID() string { return p.cfg.OrgID }

// Limits returns the command limits (defaults filled in) that callers pass
// to ParseCommand, so the HTTP API and every source validate alike.
func (p *Publisher) Limits() CommandLimits { return p.limits }

// Start opens the connection in the background; autopaho reconnects with
// the MQTT_RECONNECT_MIN/MAX backoff until Stop. It does not wait for the
// broker (see Ready) and fails only on a bad configuration or a second call.
func (p *Publisher) Start(ctx context.Context) error {
	// The receive maximum only sizes the inbound queue: the publisher
	// subscribes to nothing.
	cc, err := p.cfg.clientConfig(p.clientID, 16, p.log)
	if err != nil {
		return err
	}
	cc.CleanStartOnInitialConnection = true
	cc.SessionExpiryInterval = 0
	cc.OnConnectionUp = func(_ *autopaho.ConnectionManager, _ *paho.Connack) {
		p.connected.Store(true)
		p.metrics.MQTTConnected(p.clientID, true)
		p.log.Info("MQTT connection established", "url", redact.URLs(p.cfg.URL))
	}
	cc.OnConnectionDown = func() bool {
		p.connected.Store(false)
		p.metrics.MQTTConnected(p.clientID, false)
		p.log.Warn("MQTT connection lost")
		return true
	}
	cc.OnConnectError = func(err error) {
		p.log.Warn("MQTT connection attempt failed", "url", redact.URLs(p.cfg.URL), "err", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.cm.Load() != nil {
		return fmt.Errorf("start publisher %s: %w", p.clientID, ErrClosed)
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
// wrapping ErrNotConnected (or ErrClosed after Stop).
func (p *Publisher) Ready() error {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	switch {
	case closed:
		return fmt.Errorf("publisher %s: %w", p.clientID, ErrClosed)
	case !p.connected.Load():
		return fmt.Errorf("publisher %s: %w", p.clientID, ErrNotConnected)
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
// ErrClosed after Stop, and ctx.Err() wrapped when ctx ended first. A PUBACK
// with 0x10 (no matching subscribers) is a success. Retrying is the caller's
// decision: see Retryable.
func (p *Publisher) Publish(ctx context.Context, t Target, c Command, source string) (PublishResult, error) {
	start := time.Now()
	res, err := p.publish(ctx, t, c, source)
	if err != nil {
		p.metrics.CommandRefused(source, ReasonOf(err))
	} else {
		p.metrics.CommandPublished(source, time.Since(start))
	}
	return res, err
}

func (p *Publisher) publish(ctx context.Context, t Target, c Command, source string) (PublishResult, error) {
	log := p.log.With("source", source, "org", t.Org, "node", t.Node, "correlation_id", c.CorrelationID)
	if err := t.Validate(); err != nil {
		err = fmt.Errorf("publish command: %w", err)
		log.Warn("command refused", "err", err)
		return PublishResult{}, err
	}
	topic := t.MQTTTopic()
	log = log.With("topic", topic)
	if p.cfg.OrgID != "" && t.Org != p.cfg.OrgID {
		err := fmt.Errorf("publish %s: org %q: %w %q", topic, t.Org, ErrOutOfScope, p.cfg.OrgID)
		log.Warn("command refused", "err", err)
		return PublishResult{}, err
	}
	if c.Raw() == nil || c.CorrelationID == "" {
		return PublishResult{}, fmt.Errorf("publish %s: command not built by ParseCommand", topic)
	}
	remaining := c.Remaining(p.now())
	if remaining <= 0 {
		err := fmt.Errorf("publish %s: %w at %s, %s ago", topic, ErrExpired, c.ExpiresAt().Format(time.RFC3339), (-remaining).Truncate(time.Millisecond))
		log.Warn("command refused", "err", err)
		return PublishResult{}, err
	}

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return PublishResult{}, fmt.Errorf("publish %s: %w", topic, ErrClosed)
	}
	p.inflight.Add(1)
	p.mu.Unlock()
	defer p.inflight.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(p.abort, cancel)()

	cm := p.cm.Load()
	if cm == nil {
		return PublishResult{}, fmt.Errorf("publish %s: %w: publisher not started", topic, ErrNotConnected)
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
		res := PublishResult{Topic: topic}
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
	var refused *RefusedError
	switch {
	case errors.As(err, &refused):
		log.Warn("command refused", "err", err)
	case errors.Is(err, ErrPublishTimeout):
		log.Warn("command publish timed out", "err", err)
	default:
		log.Debug("command not published", "err", err)
	}
	return PublishResult{}, err
}

// publishError classifies a failed cm.Publish.
func (p *Publisher) publishError(ctx context.Context, topic string, resp *paho.PublishResponse, err error) error {
	if resp != nil && resp.ReasonCode >= 0x80 {
		refused := &RefusedError{Topic: topic, ReasonCode: resp.ReasonCode}
		if resp.Properties != nil {
			refused.Reason = resp.Properties.ReasonString
		}
		return refused
	}
	switch {
	case errors.Is(err, autopaho.ConnectionDownError), errors.Is(err, session.ErrNoConnection):
		return fmt.Errorf("publish %s: %w: %w", topic, ErrNotConnected, err)
	case p.abort.Err() != nil:
		return fmt.Errorf("publish %s: %w: shut down before the PUBACK", topic, ErrClosed)
	case ctx.Err() != nil:
		// The caller gave up (or is shutting down); the broker may still
		// get the command.
		return fmt.Errorf("publish %s: %w", topic, ctx.Err())
	case errors.Is(err, context.DeadlineExceeded):
		// paho bounds the wait (and the wait for a send slot) with
		// PacketTimeout, whatever ctx says.
		return fmt.Errorf("publish %s: %w (%s)", topic, ErrPublishTimeout, p.cfg.PublishTimeout)
	}
	if p.Ready() != nil {
		// paho's "not fully acknowledged at time of shutdown" and similar.
		return fmt.Errorf("publish %s: %w: %w", topic, ErrNotConnected, err)
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

// Stop refuses new commands (ErrClosed), waits until the Publish calls in
// progress have their PUBACK or error (until ctx ends; those still waiting
// then return ErrClosed, and the broker may or may not have the command),
// then disconnects cleanly. Calling it again is a no-op.
func (p *Publisher) Stop(ctx context.Context) error {
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
