package natsjs

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
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

// Sink is the JetStream sink. It is safe for concurrent use. New builds
// it; Start sets up the streams and starts its goroutines (the ack loop,
// the readiness poller and the stream repairer); Close stops and waits for
// them.
type Sink struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger

	window  chan struct{} // one token per publish awaiting its PubAck
	pending chan pending  // futures in publish order, read by the ack loop

	mu      sync.RWMutex
	started bool
	closed  bool
	done    chan struct{} // closed when the ack loop has resolved everything

	// ready polls the connection status behind Ready every readyRefresh:
	// nats.go holds the connection's lock while a write to the server
	// blocks (a slow link, up to its one-minute flusher timeout), and
	// reading the status there would hang /readyz and /metrics with it.
	ready *health.Poller

	health   health.Writes
	repairer *health.Repairer // recreates missing streams, off the write path

	// metrics counts the writes JetStream deduplicated: a redelivery the
	// bridge wrote again (PubAck duplicate flag), which readers of the
	// stream do not see twice and operators would otherwise never see.
	metrics bridge.Metrics
}

// readyRefresh is how often the connection status behind Ready is read.
const readyRefresh = 250 * time.Millisecond

type pending struct {
	fut  jetstream.PubAckFuture
	m    *bridge.Message
	done func(error)
}

// New returns a sink on nc counting in m (nil counts nothing); it neither
// talks to the server nor starts goroutines: Start does.
func New(nc *nats.Conn, cfg Config, log *slog.Logger, m bridge.Metrics) (*Sink, error) {
	if m == nil {
		m = bridge.NopMetrics{}
	}
	js, err := natsconn.JetStream(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.PublishWindow),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout),
	)
	if err != nil {
		return nil, err
	}
	s := &Sink{
		cfg:     cfg,
		nc:      nc,
		js:      js,
		log:     log.With("component", "sink", "backbone", "nats"),
		window:  make(chan struct{}, cfg.PublishWindow),
		pending: make(chan pending, cfg.PublishWindow),
		done:    make(chan struct{}),
		metrics: m,
	}
	s.repairer = health.NewRepairer(repairInterval, s.repair)
	s.ready = health.NewPoller(s.connState(), readyRefresh, readyRefresh,
		func(context.Context) error { return s.connState() }, nil)
	if s.cfg.UnhealthyAfter <= 0 {
		s.cfg.UnhealthyAfter = DefaultUnhealthyAfter
	}
	return s, nil
}

// Start sets up the streams (created or updated with ManageStreams, else
// checked), retrying while the server is unreachable until ctx ends, then
// starts the sink's goroutines. A refusal from the server (bad config,
// JetStream disabled) is returned, and the sink stays unstarted. ctx only
// bounds the setup.
func (s *Sink) Start(ctx context.Context) error {
	err := backoff.UntilReachable(ctx, "set up streams", s.log, "JetStream not reachable yet, retrying",
		func(err error) bool { return !natsconn.Unreachable(err) }, s.ensureStreams)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return fmt.Errorf("start jetstream sink: %w", bridge.ErrClosed)
	}
	s.started = true
	go s.ackLoop()
	s.ready.Start()
	s.repairer.Start()
	return nil
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
	if err := s.ready.Ready(); err != nil {
		return err
	}
	return s.health.Check(s.cfg.UnhealthyAfter)
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
	if s.closed || !s.started {
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
				s.metrics.Deduplicated()
			}
		case err = <-p.fut.Err():
		}
		<-s.window // before done: its caller may write the next message at once
		s.observe(err)
		p.done(s.classify(p.fut.Msg(), err))
	}
}

// classify gives a JetStream write error its meaning through
// natsconn.WrapWrite, the one classification of NATS write errors: a
// message too large is wrapped with bridge.ErrTooLarge, any other refusal
// for good (a JetStream API error 400) with bridge.ErrRejected, both
// keeping the server's error, so the worker dead-letters the message at
// once with it as Nr-Error. Everything else (not connected, timeouts, no
// responders, 503) is retried.
func (s *Sink) classify(msg *nats.Msg, err error) error {
	if err == nil {
		return nil
	}
	op := "publish " + msg.Subject
	if natsconn.TooLarge(err) {
		op = fmt.Sprintf("%s: %d bytes with headers (max_payload %d)", op, msgSize(msg), s.nc.MaxPayload())
	}
	return bridge.BackboneError(op, err, natsconn.TooLarge(err), natsconn.Permanent(err))
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
	return &nats.Msg{Subject: subject, Header: natsconn.Header(hs), Data: data}
}

// Close stops intake (later writes get bridge.ErrClosed) and waits (until
// ctx ends) for every pending publish to resolve, so written messages are
// still acknowledged to MQTT, and for the sink's goroutines. It does not
// close the NATS connection, which the caller owns and drains. Calling it
// again, or on a sink never started, is harmless.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	started := s.started
	if !s.closed {
		s.closed = true
		close(s.pending)
	}
	s.mu.Unlock()
	s.repairer.Stop()
	if !started {
		return nil
	}
	for _, done := range []<-chan struct{}{s.done, s.repairer.Done()} {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("close jetstream sink: %w", ctx.Err())
		}
	}
	s.ready.Close()
	return nil
}
