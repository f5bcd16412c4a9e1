package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/backoff"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/internal/ratelog"
)

// ackTimeout bounds waiting for the server to confirm an ack or a
// dead-letter write.
const ackTimeout = 5 * time.Second

// Intake is what the source calls: the bridge's one command intake
// (*bridge.Intake).
type Intake interface {
	// Submit checks the target, parses raw and publishes the command,
	// returning after the broker's PUBACK; see bridge.Intake.Submit.
	Submit(ctx context.Context, source string, t bridge.Target, raw []byte) (bridge.Command, bridge.PublishResult, error)
	// Refuse counts a command refused before it could be submitted (a
	// subject that is no target) and returns err.
	Refuse(source string, err error) error
	// DeadLettered counts a command written to the dead-letter subject
	// because of err.
	DeadLettered(err error)
	// OrgID is the bridge's scope, ORG_ID ("" when unscoped).
	OrgID() string
}

// Source consumes the commands stream through its durable consumer (see
// Config.ConsumerFor: one per scope, filtered to its org's subjects for a
// scoped bridge). Each message is handled once at a time by one of
// Concurrency workers:
//
//   - target from the subject, then Intake.Submit with source "stream"
//     (target and scope checked, body parsed, command published);
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
	streams natsconn.Streams
	orgID   string // ORG_ID, "" when unscoped
	// consumer is the durable (Config.ConsumerFor), filters its subjects
	// when it is a scoped replica's own.
	consumer string
	filters  []string
	in       Intake
	log      *slog.Logger
	backoff  func(int) time.Duration
	retryLog *ratelog.Limiter // the retry WARN, once per 5 s

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
}

// delivery is a message on its way from the consume callback to a worker.
type delivery struct {
	msg jetstream.Msg
	at  time.Time // when the callback got it
}

// New returns a source reading the commands stream with js and submitting
// every command to in. streams are the shared stream settings: the subject
// prefix, the dead-letter stream and how streams are managed. It starts
// nothing: Start begins consuming.
func New(js jetstream.JetStream, cfg Config, streams natsconn.Streams, in Intake, log *slog.Logger) *Source {
	orgID := in.OrgID()
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
		in:       in,
		log:      log.With("component", "commands", "backbone", "nats"),
		backoff:  backoff.Exponential(cfg.RetryMin, cfg.RetryMax),
		retryLog: ratelog.New(5 * time.Second),
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

// Close stops pulling, hands back (nak) the commands not yet started, and
// waits for the workers to finish the ones in progress: publish, then ack,
// dead letter or nak. When ctx ends first, in-progress publishes are
// aborted and their commands nakked. It does not close the NATS connection,
// which the caller owns and drains afterwards. Calling it again is a no-op.
func (s *Source) Close(ctx context.Context) error {
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
