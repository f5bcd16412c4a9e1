package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/backoff"
	"github.com/nr-bridge/nr-bridge/internal/health"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
)

// Header names specific to this sink.
const (
	// HeaderMsgID is JetStream's deduplication header, set to
	// Message.DedupeID: the MQTT v5 user property msg_id scoped to the
	// node, <org>/<node>/<msg_id>.
	HeaderMsgID = jetstream.MsgIDHeader
	// HeaderOriginalSize is set on a dead letter whose payload was cut to fit
	// the server's maximum message size; it holds the original length.
	HeaderOriginalSize = bridge.HeaderOriginalSize
)

// deadLetterMargin is what a dead letter keeps free below the server's
// max_payload besides its subject: the "NATS/1.0" header line and the
// framing FitDeadLetter does not count.
const deadLetterMargin = 1024

// Sink is the JetStream sink. It is safe for concurrent use.
type Sink struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger

	window  chan struct{} // one token per publish awaiting its PubAck
	pending chan pending  // futures in publish order, read by the ack loop

	mu     sync.RWMutex
	closed bool
	done   chan struct{} // closed when the ack loop has resolved everything

	// ready is what Ready reports, refreshed every readyRefresh by
	// watchReady: nats.go holds the connection's lock while a write to the
	// server blocks (a slow link, up to its one-minute flusher timeout), and
	// reading the status there would hang /readyz and /metrics with it.
	ready     atomic.Pointer[readyState]
	stopReady chan struct{}
	readyDone chan struct{} // closed when watchReady returned

	health   health.Writes
	repairer *health.Repairer // recreates missing streams, off the write path

	// metrics counts the writes JetStream deduplicated (SetMetrics); nil
	// until set, read by the ack loop.
	metrics atomic.Pointer[bridge.Metrics]
}

// readyRefresh is how often the connection status behind Ready is read.
const readyRefresh = 250 * time.Millisecond

type readyState struct{ err error }

type pending struct {
	fut  jetstream.PubAckFuture
	m    *bridge.Message
	done func(error)
}

// New returns a sink on nc. With ManageStreams it creates or updates the
// streams, retrying while the server is unreachable until ctx ends; a
// refusal from the server (bad config, JetStream disabled) is returned.
func New(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) (*Sink, error) {
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.PublishWindow),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout),
	)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	s := &Sink{
		cfg:     cfg,
		nc:      nc,
		js:      js,
		log:     log.With("component", "sink", "backbone", "nats"),
		window:  make(chan struct{}, cfg.PublishWindow),
		pending: make(chan pending, cfg.PublishWindow),
		done:    make(chan struct{}),

		stopReady: make(chan struct{}),
		readyDone: make(chan struct{}),
	}
	s.repairer = health.NewRepairer(repairInterval, s.repair)
	if s.cfg.UnhealthyAfter <= 0 {
		s.cfg.UnhealthyAfter = DefaultUnhealthyAfter
	}
	if err := s.setup(ctx); err != nil {
		return nil, err
	}
	s.ready.Store(&readyState{err: s.connState()})
	go s.ackLoop()
	go s.watchReady()
	go s.repairer.Run()
	return s, nil
}

// SetMetrics makes the sink count every write JetStream acknowledged as a
// duplicate (PubAck duplicate flag: a message with the same Nats-Msg-Id was
// stored within the stream's duplicate window) with m.Deduplicated. The
// stream keeps one copy, so without this count a redelivery the bridge
// wrote again would be invisible to operators. It may be called while
// writes are in flight.
func (s *Sink) SetMetrics(m bridge.Metrics) {
	if m == nil {
		m = bridge.NopMetrics{}
	}
	s.metrics.Store(&m)
}

// JetStream returns the JetStream context, shared with the commands source.
func (s *Sink) JetStream() jetstream.JetStream { return s.js }

func (s *Sink) setup(ctx context.Context) error {
	backoff := backoff.Exponential(500*time.Millisecond, 10*time.Second)
	for attempt := 0; ; attempt++ {
		err := s.ensureStreams(ctx)
		if err == nil {
			return nil
		}
		if !Transient(err) {
			return err
		}
		s.log.Warn("JetStream not reachable yet, retrying", "err", err, "attempt", attempt)
		select {
		case <-time.After(backoff(attempt)):
		case <-ctx.Done():
			return fmt.Errorf("set up streams: %w (last error: %v)", ctx.Err(), err)
		}
	}
}

func (s *Sink) ensureStreams(ctx context.Context) error {
	for _, sc := range s.cfg.streamConfigs() {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var err error
		if s.cfg.ManageStreams {
			err = EnsureStream(cctx, s.js, sc, s.log)
		} else {
			err = CheckStream(cctx, s.js, sc.Name)
		}
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// Transient reports whether err means "server not reachable (yet)" (a
// timeout, no responders, a reconnecting connection) rather than a refusal
// from the server, which is worth stopping for.
func Transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return false
	}
	if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) ||
		errors.Is(err, jetstream.ErrStreamNotFound) {
		return false
	}
	return true
}

// Ready returns nil while the NATS connection is up, else its state and
// the last connection error (a refused TLS handshake, an authorization
// violation), so /readyz says why. It never blocks: it reports the state
// read at most readyRefresh ago (or, while a write holds the connection,
// the last state read).
//
// Once every publish has failed for NATS_UNHEALTHY_AFTER (a deleted stream
// the bridge cannot recreate, a server that refuses writes although the
// connection is up) it says so, with the last error.
func (s *Sink) Ready() error {
	if err := s.ready.Load().err; err != nil {
		return err
	}
	return s.health.Check(s.cfg.UnhealthyAfter)
}

// watchReady refreshes what Ready reports until Close.
func (s *Sink) watchReady() {
	defer close(s.readyDone)
	tick := time.NewTicker(readyRefresh)
	defer tick.Stop()
	for {
		select {
		case <-s.stopReady:
			return
		case <-tick.C:
		}
		s.ready.Store(&readyState{err: s.connState()})
	}
}

// connState reads the connection's status; it blocks while a write to the
// server holds the connection's lock.
func (s *Sink) connState() error {
	if st := s.nc.Status(); st != nats.CONNECTED {
		if err := s.nc.LastError(); err != nil {
			return fmt.Errorf("nats %s: %w", st, err)
		}
		return fmt.Errorf("nats %s", st)
	}
	return nil
}

// Write publishes m asynchronously; see bridge.Sink.
func (s *Sink) Write(ctx context.Context, m *bridge.Message, done func(error)) {
	select {
	case s.window <- struct{}{}:
	case <-ctx.Done():
		done(ctx.Err())
		return
	}
	msg := s.natsMsg(m)
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		<-s.window
		done(bridge.ErrClosed)
		return
	}
	fut, err := s.js.PublishMsgAsync(msg)
	if err != nil {
		s.mu.RUnlock()
		<-s.window
		s.observe(err)
		done(s.classify(msg, err))
		return
	}
	s.pending <- pending{fut: fut, m: m, done: done}
	s.mu.RUnlock()
}

// ackLoop resolves futures in publish order. Every future resolves: with a
// PubAck, an error, or the publish-ack timeout.
func (s *Sink) ackLoop() {
	defer close(s.done)
	for p := range s.pending {
		var err error
		select {
		case ack := <-p.fut.Ok():
			if ack != nil && ack.Duplicate {
				if m := s.metrics.Load(); m != nil {
					(*m).Deduplicated()
				}
			}
		case err = <-p.fut.Err():
		}
		<-s.window // before done, which may write again
		s.observe(err)
		p.done(s.classify(p.fut.Msg(), err))
	}
}

// classify is the sink's one classification of JetStream write errors
// (natsconn.Permanent): a message too large is wrapped with
// bridge.ErrTooLarge, any other refusal for good (a JetStream API error
// 400) with bridge.ErrRejected, both keeping the server's error, so the
// worker dead-letters the message at once with it as Nr-Error. Everything
// else (not connected, timeouts, no responders, 503) is returned as it is
// and retried.
func (s *Sink) classify(msg *nats.Msg, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case natsconn.TooLarge(err):
		return fmt.Errorf("publish %s: %d bytes with headers (max_payload %d): %w: %w", msg.Subject, msgSize(msg), s.nc.MaxPayload(), bridge.ErrTooLarge, err)
	case natsconn.Permanent(err):
		return fmt.Errorf("publish %s: %w: %w", msg.Subject, bridge.ErrRejected, err)
	}
	return fmt.Errorf("publish %s: %w", msg.Subject, err)
}

// msgSize is about what msg counts against max_payload: its payload and
// its encoded headers.
func msgSize(msg *nats.Msg) int {
	n := len(msg.Data)
	for k, vs := range msg.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4 // "k: v\r\n"
		}
	}
	return n
}

func (s *Sink) subject(m *bridge.Message) string {
	if m.DeadLetter != "" {
		return bridge.DeadLetterSubject(s.cfg.SubjectPrefix, string(m.Kind))
	}
	return bridge.NodeTopic{Org: m.Org, Node: m.Node, Kind: m.Kind}.Subject(s.cfg.SubjectPrefix)
}

func (s *Sink) natsMsg(m *bridge.Message) *nats.Msg {
	if m.DeadLetter != "" {
		return s.deadLetterMsg(m)
	}
	// One backing array for every header value instead of a slice per
	// header; each value gets a capped one-element window of it, so a
	// repeated name appends to a copy and never overwrites a neighbour.
	// Sized exactly (the message's headers plus Nats-Msg-Id): an event
	// with a content type and a msg_id has 7 headers, which Go keeps in
	// one small-map group; a hint above 8 allocates a full table, about 750
	// bytes more per message. The headers are built on the stack.
	var buf [12]bridge.Header
	hs := m.AppendHeaders(buf[:0])
	n := len(hs) + 1
	h := make(nats.Header, n)
	vals := make([]string, 0, n)
	add := func(k, v string) {
		if old, ok := h[k]; ok {
			h[k] = append(old, v)
			return
		}
		vals = append(vals, v)
		n := len(vals)
		h[k] = vals[n-1 : n : n]
	}
	for _, x := range hs {
		add(x.Name, x.Value)
	}
	var subject string
	if m.MsgID == "" {
		subject = s.subject(m)
	} else {
		// What jetstream.WithMsgID sets, without a per-message option; no
		// user property can set it (bridge.ReservedProperty). The value is
		// m.DedupeID(), <org>/<node>/<msg_id> for a message that is not a
		// dead letter, built in one string with the subject so that the
		// scoping costs no allocation of its own (TestNatsMsgAllocations;
		// TestNatsMsgDedupeID checks the two agree).
		kind := string(m.Kind)
		both := s.cfg.SubjectPrefix + ".org." + m.Org + ".node." + m.Node + "." + kind + m.Org + "/" + m.Node + "/" + m.MsgID
		cut := len(s.cfg.SubjectPrefix) + len(".org.") + len(m.Org) + len(".node.") + len(m.Node) + 1 + len(kind)
		subject = both[:cut]
		vals = append(vals, both[cut:])
		n := len(vals)
		h[HeaderMsgID] = vals[n-1 : n : n]
	}
	return &nats.Msg{Subject: subject, Header: h, Data: m.Payload}
}

// deadLetterMsg builds m's dead letter cut (bridge.FitDeadLetter) to the
// server's max_payload less its subject and deadLetterMargin, its headers
// to JetStream's 64 KB less the margin, so that the server never refuses
// it for its size: a message refused for its headers
// (hundreds of user properties) loses them, one refused for its payload
// keeps a cut payload with Nr-Original-Size.
func (s *Sink) deadLetterMsg(m *bridge.Message) *nats.Msg {
	subject := s.subject(m)
	limit := int(s.nc.MaxPayload()) - len(subject) - deadLetterMargin
	hs, data := m.FittedDeadLetter(HeaderMsgID, limit, natsconn.MaxHeaderBytes-deadLetterMargin)
	h := make(nats.Header, len(hs))
	for _, x := range hs {
		h[x.Name] = append(h[x.Name], x.Value)
	}
	return &nats.Msg{Subject: subject, Header: h, Data: data}
}

// Close stops intake and waits (until ctx ends) for every pending publish to
// resolve, so written messages are still acknowledged to MQTT. It does not
// close the NATS connection, which the caller owns and drains.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.pending)
		close(s.stopReady)
		s.repairer.Stop()
	}
	s.mu.Unlock()
	for _, done := range []<-chan struct{}{s.done, s.readyDone, s.repairer.Done()} {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("close jetstream sink: %w", ctx.Err())
		}
	}
	return nil
}
