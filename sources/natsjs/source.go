package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/backoff"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	sinknatsjs "github.com/nr-bridge/nr-bridge/sinks/natsjs"
)

// ackTimeout bounds waiting for the server to confirm an ack or a
// dead-letter write.
const ackTimeout = 5 * time.Second

// Publisher is what the source calls: the bridge's single validating
// publisher (*publisher.Publisher).
type Publisher interface {
	// Limits are the command limits bodies are parsed with.
	Limits() bridge.CommandLimits
	// Publish publishes a parsed command and returns after the broker's
	// PUBACK; see bridge.Publisher.Publish.
	Publish(ctx context.Context, t bridge.Target, c bridge.Command, source string) (bridge.PublishResult, error)
	// Refused counts a command refused before it reached Publish (bad
	// subject or key, a body that does not parse).
	Refused(source string, err error)
	// DeadLettered counts a command written to the dead-letter subject or
	// topic because of err.
	DeadLettered(err error)
}

// Source consumes the commands stream through its durable consumer (see
// Config.ConsumerFor: one per scope, filtered to its org's subjects for a
// scoped bridge). Each message is handled once at a time by one of
// Concurrency workers:
//
//   - target from the subject, body through bridge.ParseCommand, then
//     Publisher.Publish with source "stream";
//   - published (PUBACK): acked with DoubleAck, so the command leaves the
//     work queue before the worker takes the next one;
//   - invalid, expired, out of scope or refused for good by the broker: the
//     body is written to <prefix>.dlq.cmd with Nr-Error (the reason) and
//     Nr-Subject (the original subject), unchanged unless it must be cut to
//     fit max_payload (then with Nr-Original-Size), and once JetStream
//     acknowledged that write the message is terminated;
//   - broker not connected, no PUBACK in time, a temporary refusal: nak with
//     a delay growing from RetryMin to RetryMax, never past the command's
//     TTL, so it comes back (to any replica) and, once expired, is
//     dead-lettered as expired.
//
// Delivery to MQTT is at least once: a crash between the PUBACK and the ack
// publishes the command again on redelivery.
type Source struct {
	js      jetstream.JetStream
	cfg     Config
	streams sinknatsjs.Config
	orgID   string // ORG_ID, "" when unscoped
	// consumer is the durable (Config.ConsumerFor), filters its subjects
	// when it is a scoped replica's own.
	consumer string
	filters  []string
	pub      Publisher
	log      *slog.Logger
	backoff  func(int) time.Duration

	ctx      context.Context // cancelled when Stop gives up waiting
	cancel   context.CancelFunc
	ccMu     sync.Mutex
	cc       jetstream.ConsumeContext // replaced by resume after the consumer was lost
	lost     chan struct{}            // the consumer (or its stream) is gone: resume consuming
	resumed  chan struct{}            // closed when the resume loop ended
	work     chan delivery
	stopping chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup // workers
	lastWarn atomic.Int64   // unix nanos of the last retry WARN
}

// delivery is a message on its way from the consume callback to a worker.
type delivery struct {
	msg jetstream.Msg
	at  time.Time // when the callback got it
}

// New returns a source reading the commands stream with js and publishing
// through pub. streams is the JetStream sink's configuration, for the
// subject prefix, the dead-letter stream and how streams are managed. Start
// begins consuming.
func New(js jetstream.JetStream, cfg Config, streams sinknatsjs.Config, pub Publisher, log *slog.Logger) *Source {
	orgID := ""
	if sp, ok := pub.(interface{ OrgID() string }); ok {
		orgID = sp.OrgID()
	}
	var filters []string
	if cfg.Consumer == "" && orgID != "" {
		// Its own consumer, on its own org's commands only: the others
		// stay for the replicas of their org.
		p := streams.SubjectPrefix
		filters = []string{p + ".org." + orgID + ".node.*.cmd", p + ".org." + orgID + ".broadcast.cmd"}
	}
	return &Source{
		js:       js,
		cfg:      cfg,
		streams:  streams,
		orgID:    orgID,
		consumer: cfg.ConsumerFor(orgID),
		filters:  filters,
		pub:      pub,
		log:      log.With("component", "commands", "backbone", "nats"),
		backoff:  backoff.Exponential(cfg.RetryMin, cfg.RetryMax),
		work:     make(chan delivery),
		stopping: make(chan struct{}),
		lost:     make(chan struct{}, 1),
		resumed:  make(chan struct{}),
	}
}

// Start creates or updates the stream (with NATS_MANAGE_STREAMS) and the
// durable consumer, retrying while the server is unreachable until ctx
// ends, then starts the workers and consuming. A refusal from the server is
// returned. ctx only bounds the setup; Stop ends the consuming.
func (s *Source) Start(ctx context.Context) error {
	if s.cfg.Consumer != "" && s.orgID != "" && !strings.Contains(s.cfg.Consumer, s.orgID) {
		s.log.Warn("NATS_COMMANDS_CONSUMER is set with ORG_ID: replicas of other orgs on this consumer take this org's commands and dead-letter them as out of scope; leave it empty for a consumer per org",
			"consumer", s.cfg.Consumer, "org", s.orgID)
	}
	cons, err := s.setup(ctx)
	if err != nil {
		return err
	}
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	for range s.cfg.Concurrency {
		s.wg.Add(1)
		go s.worker()
	}
	// Pulling only as many as there are workers keeps commands from waiting
	// in a client buffer while their AckWait runs.
	cc, err := s.consume(cons)
	if err != nil {
		s.stopWorkers()
		close(s.resumed)
		return err
	}
	s.cc = cc
	go s.resume()
	s.log.Info("consuming commands", "stream", s.cfg.Stream, "consumer", s.consumer, "concurrency", s.cfg.Concurrency)
	return nil
}

// consume starts consuming cons; a consumer that disappears (deleted, or
// its stream deleted or lost by the server) signals the resume loop.
func (s *Source) consume(cons jetstream.Consumer) (jetstream.ConsumeContext, error) {
	cc, err := cons.Consume(s.onMessage,
		jetstream.PullMaxMessages(s.cfg.Concurrency),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			s.log.Warn("consuming commands", "err", err)
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
				errors.Is(err, jetstream.ErrStreamNotFound) {
				select {
				case s.lost <- struct{}{}:
				default:
				}
			}
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("consume %s/%s: %w", s.cfg.Stream, s.consumer, err)
	}
	return cc, nil
}

// resumeInterval is how often at most the source sets up the stream and
// consumer again after losing them.
const resumeInterval = 2 * time.Second

// resume sets up the stream (with NATS_MANAGE_STREAMS) and the durable
// consumer again whenever consuming lost them, and consumes again, until
// Stop, so commands written to a recreated stream are published without a
// restart. Messages of the old consumer still in flight finish as before;
// their acks fail and the new consumer delivers them again.
func (s *Source) resume() {
	defer close(s.resumed)
	for {
		select {
		case <-s.lost:
		case <-s.stopping:
			return
		}
		select {
		case <-time.After(resumeInterval):
		case <-s.stopping:
			return
		}
		ctx, cancel := context.WithTimeout(s.ctx, resumeInterval)
		cons, err := s.ensure(ctx)
		cancel()
		if err != nil {
			s.log.Error("commands stream or consumer lost and not set up again; retrying", "stream", s.cfg.Stream, "consumer", s.consumer, "err", err)
			select {
			case s.lost <- struct{}{}:
			default:
			}
			continue
		}
		s.ccMu.Lock()
		select {
		case <-s.stopping:
			s.ccMu.Unlock()
			return
		default:
		}
		cc, err := s.consume(cons)
		if err != nil {
			s.ccMu.Unlock()
			s.log.Error("consuming commands again failed; retrying", "err", err)
			select {
			case s.lost <- struct{}{}:
			default:
			}
			continue
		}
		old := s.cc
		s.cc = cc
		s.ccMu.Unlock()
		old.Stop()
		s.log.Warn("commands stream or consumer was lost (deleted, or the server lost its store): set up again, consuming", "stream", s.cfg.Stream, "consumer", s.consumer)
	}
}

// consumeContext is the current consume context.
func (s *Source) consumeContext() jetstream.ConsumeContext {
	s.ccMu.Lock()
	defer s.ccMu.Unlock()
	return s.cc
}

// onMessage is the consume callback. It runs one message at a time, so it
// only hands the message to a free worker; blocking here is the bound on
// concurrency. Once stopping, it naks at once so another replica takes the
// command without waiting for AckWait.
func (s *Source) onMessage(m jetstream.Msg) {
	select {
	case s.work <- delivery{msg: m, at: time.Now()}:
	case <-s.stopping:
		_ = m.Nak()
	}
}

func (s *Source) worker() {
	defer s.wg.Done()
	for {
		select {
		case d := <-s.work:
			s.handle(d)
		case <-s.stopping:
			return
		}
	}
}

// handle takes one command from delivery to ack, dead letter or nak.
func (s *Source) handle(d delivery) {
	m := d.msg
	if time.Since(d.at) > s.cfg.AckWait/3 {
		// It waited for a worker: give it a full AckWait for the publish.
		_ = m.InProgress()
	}
	subject := m.Subject()
	attempt := 1
	if meta, err := m.Metadata(); err == nil {
		attempt = int(meta.NumDelivered)
	}
	t, err := bridge.ParseCommandSubject(s.streams.SubjectPrefix, subject)
	if err != nil {
		s.pub.Refused(bridge.SourceStream, err)
		s.deadLetter(m, "", err)
		return
	}
	c, err := bridge.ParseCommand(m.Data(), time.Now(), s.pub.Limits())
	if err != nil {
		s.pub.Refused(bridge.SourceStream, err)
		s.deadLetter(m, "", err)
		return
	}
	_, err = s.pub.Publish(s.ctx, t, c, bridge.SourceStream)
	switch {
	case err == nil:
		s.ack(m, c.CorrelationID)
	case !bridge.Retryable(err):
		s.deadLetter(m, c.CorrelationID, err)
	case s.ctx.Err() != nil:
		_ = m.Nak() // shutting down: another replica publishes it now
	default:
		s.retry(m, c, attempt, err)
	}
}

// ack removes a published command from the work queue. DoubleAck, not Ack:
// the worker waits for the server's confirmation, so an ack lost in transit
// is logged (the command comes back after AckWait and is published again)
// rather than unnoticed, and Stop returns with the acks done.
func (s *Source) ack(m jetstream.Msg, correlationID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), ackTimeout)
	defer cancel()
	if err := m.DoubleAck(ctx); err != nil {
		s.log.Warn("command published but its ack was not confirmed; it may be published again",
			"subject", m.Subject(), "correlation_id", correlationID, "err", err)
		return
	}
	s.log.Debug("command acked", "subject", m.Subject(), "correlation_id", correlationID)
}

// retry naks the command with a delay growing per delivery, cut to the
// TTL left (plus a little), so that the delivery after the TTL finds it
// expired and dead-letters it.
func (s *Source) retry(m jetstream.Msg, c bridge.Command, attempt int, cause error) {
	remaining := c.Remaining(time.Now())
	if remaining <= 0 {
		s.deadLetter(m, c.CorrelationID, fmt.Errorf("%w while retrying (last error: %v)", bridge.ErrExpired, cause))
		return
	}
	delay := s.backoff(attempt - 1)
	if delay > remaining {
		delay = remaining + 50*time.Millisecond
	}
	if err := m.NakWithDelay(delay); err != nil {
		s.log.Debug("nak failed; the command comes back after AckWait", "subject", m.Subject(), "err", err)
	}
	log := s.log.Debug
	now := time.Now().UnixNano()
	if last := s.lastWarn.Load(); now-last > int64(5*time.Second) && s.lastWarn.CompareAndSwap(last, now) {
		log = s.log.Warn
	}
	log("command not published, retrying", "subject", m.Subject(), "correlation_id", c.CorrelationID,
		"attempt", attempt, "delay", delay.String(), "err", cause)
}

// deadLetterMargin is what a command dead letter keeps free below the
// server's max_payload besides its subject: the "NATS/1.0" line and the end
// of the header block, with room to spare (FitDeadLetter already counts
// more per header than NATS writes).
const deadLetterMargin = 1024

// deadLetter writes the command to <prefix>.dlq.cmd with the reason
// (Nr-Error) and its subject (Nr-Subject), waits for JetStream's PubAck,
// then terminates the original. The dead letter is cut by
// bridge.FitDeadLetter to the connection's max_payload (the payload first,
// with Nr-Original-Size), so a command near the limit does not make a dead
// letter over it. If JetStream still refuses it for good (natsconn.Permanent:
// NR_DLQ's max_msg_size is smaller, say), it is cut to its minimum, the
// reason and the origin without payload, and written again. If the write
// fails the command is nakked and comes back, so it is never dropped: after
// RetryMin for a transient failure, after RetryMax when even the minimum is
// refused for good (an operator must fix NR_DLQ; logged as an ERROR).
func (s *Source) deadLetter(m jetstream.Msg, correlationID string, reason error) {
	subject := bridge.DeadLetterSubject(s.streams.SubjectPrefix, "cmd")
	headers := []bridge.Header{
		{Name: bridge.HeaderError, Value: bridge.ReasonLine(reason)},
		{Name: bridge.HeaderSubject, Value: bridge.ReasonLine(errors.New(m.Subject()))},
	}
	hs, data := bridge.FitDeadLetter(headers, m.Data(), s.deadLetterLimit(subject))
	err := s.writeDeadLetter(subject, hs, data)
	if err != nil && natsconn.Permanent(err) {
		s.log.Warn("dead letter refused; writing it again cut to the reason and the origin",
			"subject", m.Subject(), "dlq_subject", subject, "size", len(data), "err", err)
		hs, data = bridge.FitDeadLetter(headers, m.Data(), 0)
		err = s.writeDeadLetter(subject, hs, data)
	}
	if err != nil {
		delay := s.cfg.RetryMin
		if natsconn.Permanent(err) {
			delay = s.cfg.RetryMax
			s.log.Error("dead letter refused even without payload; the command comes back", "subject", m.Subject(),
				"dlq_subject", subject, "correlation_id", correlationID, "err", err)
		} else {
			s.log.Warn("dead-letter write failed; the command comes back", "subject", m.Subject(), "dlq_subject", subject, "err", err)
		}
		_ = m.NakWithDelay(delay)
		return
	}
	s.pub.DeadLettered(reason)
	// Term, not TermWithReason: servers before 2.10.4 ignore the latter and
	// would redeliver the message.
	if err := m.Term(); err != nil {
		s.log.Debug("term failed; the command comes back and is dead-lettered again", "subject", m.Subject(), "err", err)
	}
	s.log.Warn("command dead-lettered", "subject", m.Subject(), "correlation_id", correlationID, "err", reason)
}

// deadLetterLimit is what FitDeadLetter may fill with headers and payload
// of a dead letter on subject: the server's max_payload minus the subject
// and deadLetterMargin.
func (s *Source) deadLetterLimit(subject string) int {
	maxPayload := s.js.Conn().MaxPayload()
	if maxPayload <= 0 {
		maxPayload = 1 << 20 // not connected yet: nats-server's default max_payload
	}
	return max(int(maxPayload)-len(subject)-deadLetterMargin, 0)
}

// writeDeadLetter publishes one dead letter and waits for its PubAck.
func (s *Source) writeDeadLetter(subject string, hs []bridge.Header, data []byte) error {
	h := make(nats.Header, len(hs))
	for _, x := range hs {
		h[x.Name] = append(h[x.Name], x.Value)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), ackTimeout)
	defer cancel()
	if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: h, Data: data}); err != nil {
		return fmt.Errorf("dead-letter to %s: %w", subject, err)
	}
	return nil
}

// Stop stops pulling, hands back (nak) the commands not yet started, and
// waits for the workers to finish the ones in progress: publish, then ack,
// dead letter or nak. When ctx ends first, in-progress publishes are
// aborted and their commands nakked. It does not close the NATS connection,
// which the caller owns and drains afterwards. Calling it again is a no-op.
func (s *Source) Stop(ctx context.Context) error {
	if s.consumeContext() == nil {
		return nil
	}
	s.stopOnce.Do(func() {
		s.ccMu.Lock() // no resume between the close and the drain
		close(s.stopping)
		s.cc.Drain()
		s.ccMu.Unlock()
	})
	<-s.resumed
	cc := s.consumeContext()
	workers := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(workers)
	}()
	var err error
	select {
	case <-workers:
	case <-ctx.Done():
		err = fmt.Errorf("stop commands source: %w", ctx.Err())
		s.log.Warn("shutdown timeout: aborting commands in progress")
		s.cancel()
		<-workers // quick: publishes return at once, acks are bounded
	}
	s.cancel()
	// The drain ends once the server confirmed the unsubscribe; while NATS
	// is unreachable it may not, and the buffered messages come back after
	// AckWait anyway.
	select {
	case <-cc.Closed():
	case <-ctx.Done():
		select {
		case <-cc.Closed():
		case <-time.After(time.Second):
			cc.Stop()
		}
	}
	s.log.Info("commands source stopped")
	return err
}

// stopWorkers ends the workers when consuming could not start.
func (s *Source) stopWorkers() {
	s.stopOnce.Do(func() { close(s.stopping) })
	s.wg.Wait()
	s.cancel()
}
