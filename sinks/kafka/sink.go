package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/health"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
)

// Sink is the Kafka sink; see bridge.Sink. It owns its franz-go client.
// It is safe for concurrent use.
//
// Records are produced with franz-go's defaults, which are what the bridge
// promises: acks=all and idempotent writes, unbounded retries inside the
// client (a record waits while the cluster is down, and the MQTT side backs
// off because nothing is acknowledged), keyed murmur2 partitioning. Records
// written from one goroutine keep their order per key.
//
// Completions run on the sink's own goroutine, not on franz-go's promise
// goroutine, so that a slow done callback never holds back the client. The
// done rule of bridge.Sink holds: done never calls Write.
type Sink struct {
	conn   kafkaconn.Config
	cfg    Config
	opts   []kgo.Opt   // the client's, for Start
	cl     *kgo.Client // created by Start
	limits *kafkaconn.Limits
	mon    *kafkaconn.Monitor
	log    *slog.Logger

	// produceCtx is the context of every Produce call. franz-go cancels a
	// partition's whole batch when its first record's context ends, so it
	// is never a caller's context: it lives until Close gives up flushing.
	produceCtx    context.Context
	cancelProduce context.CancelFunc

	window   chan struct{} // one token per record awaiting its outcome
	queue    *completionQueue
	loopDone chan struct{}

	mu      sync.RWMutex
	closed  bool
	pending sync.WaitGroup // records handed to Produce whose done has not run

	health    health.Writes
	repairer  *health.Repairer // recreates missing topics, off the write path
	recreated atomic.Bool      // a produce failed with UNKNOWN_TOPIC_ID: purge before producing again
}

// New returns a sink of conn and cfg. It neither connects nor starts
// goroutines: Start does. It fails when a TLS file cannot be loaded.
func New(conn kafkaconn.Config, cfg Config, log *slog.Logger) (*Sink, error) {
	log = log.With("component", "sink", "backbone", "kafka")
	if cfg.UnhealthyAfter <= 0 {
		cfg.UnhealthyAfter = DefaultUnhealthyAfter
	}
	limits := kafkaconn.NewLimits(conn)
	opts, err := kafkaconn.Options(conn, log)
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		kgo.ProducerBatchMaxBytesFn(limits.MaxBytes),
		// The window bounds records in flight; franz-go's own bound only
		// has to leave room for dead letters, which bypass the window.
		kgo.MaxBufferedRecords(2*cfg.Window+1024),
		// The topics exist once Start returns, so a topic the cluster does
		// not know was lost (a cluster wiped, a topic deleted): fail its
		// records at the first metadata answer that says so, instead of
		// after four, so that the repair loop recreates it within a
		// second or two, while the workers retry the records.
		kgo.UnknownTopicRetries(1),
	)
	pctx, cancel := context.WithCancel(context.Background())
	s := &Sink{
		conn:          conn,
		cfg:           cfg,
		opts:          opts,
		limits:        limits,
		log:           log,
		produceCtx:    pctx,
		cancelProduce: cancel,
		window:        make(chan struct{}, cfg.Window),
		queue:         newCompletionQueue(),
		loopDone:      make(chan struct{}),
	}
	s.repairer = health.NewRepairer(repairInterval, s.repair)
	return s, nil
}

// Start connects to the cluster, waiting (with backoff, until ctx ends)
// while it is unreachable, makes sure the topics exist (kafkaconn.
// EnsureTopics: events, replies, commands and dead letters), reads their
// size limits, then starts the sink's goroutines: the completion loop, the
// readiness monitor and the topic repairer. A refusal from the cluster
// (topic creation denied, bad credentials) is returned, and the sink stays
// unstarted. ctx only bounds the setup.
func (s *Sink) Start(ctx context.Context) error {
	cl, err := kgo.NewClient(s.opts...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	if err := setup(ctx, cl, s.conn, s.limits, s.log); err != nil {
		cl.Close()
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl != nil || s.closed {
		cl.Close()
		return fmt.Errorf("start kafka sink: %w", bridge.ErrClosed)
	}
	s.cl = cl
	s.mon = kafkaconn.NewMonitor(cl, s.log)
	go s.completionLoop()
	s.mon.Start()
	s.repairer.Start()
	return nil
}

func setup(ctx context.Context, cl *kgo.Client, conn kafkaconn.Config, limits *kafkaconn.Limits, log *slog.Logger) error {
	if err := kafkaconn.WaitReachable(ctx, cl, log); err != nil {
		return err
	}
	// Not closed: closing a kadm client closes the kgo client under it.
	adm := kadm.NewClient(cl)
	if err := kafkaconn.EnsureTopics(ctx, adm, conn); err != nil {
		return err
	}
	if err := limits.Load(ctx, adm, conn.EventsTopic, conn.RepliesTopic, conn.DLQTopic); err != nil {
		log.Warn("topic size limits unknown, using KAFKA_MAX_MESSAGE_BYTES", "err", err, "max_message_bytes", conn.MaxMessageBytes)
	}
	log.Info("Kafka topics ready", "topics", conn.Topics())
	return nil
}

// Ready returns nil while the cluster answers (see kafkaconn.Monitor) and
// writes succeed: once every produce has failed for KAFKA_UNHEALTHY_AFTER
// (a cluster that answers but lost its topics, a partition without a
// leader), it says so, with the last error.
func (s *Sink) Ready() error {
	s.mu.RLock()
	mon := s.mon
	s.mu.RUnlock()
	if mon == nil {
		return errors.New("kafka: not started")
	}
	if err := mon.Ready(); err != nil {
		return err
	}
	return s.health.Check(s.cfg.UnhealthyAfter)
}

// Write produces m asynchronously; see bridge.Sink. done(nil) means the
// record is acknowledged by all in-sync replicas. A dead letter does not
// wait for the window: it stands for a message whose write already failed,
// and a window full of failing writes must not hold back the dead letters
// that let the worker acknowledge again.
func (s *Sink) Write(ctx context.Context, m *bridge.Message, done func(error)) {
	slot := m.DeadLetter == ""
	if slot {
		select {
		case s.window <- struct{}{}:
		case <-ctx.Done():
			done(ctx.Err())
			return
		}
	}
	s.mu.RLock()
	if s.closed || s.cl == nil {
		s.mu.RUnlock()
		if slot {
			<-s.window
		}
		done(fmt.Errorf("kafka sink: %w", bridge.ErrClosed))
		return
	}
	s.pending.Add(1)
	s.mu.RUnlock()
	s.produce(completion{m: m, r: s.record(m), done: done, slot: slot})
}

// produce hands c's record to franz-go; the promise only queues the
// outcome.
func (s *Sink) produce(c completion) {
	s.cl.Produce(s.produceCtx, c.r, func(r *kgo.Record, err error) {
		c.r, c.err = r, err
		s.queue.push(c)
	})
}

// completionLoop calls done for every outcome, in the order franz-go
// reports them, until Close.
func (s *Sink) completionLoop() {
	defer close(s.loopDone)
	var spare []completion
	for {
		batch, ok := s.queue.next(spare)
		if !ok {
			return
		}
		for i := range batch {
			s.complete(batch[i])
			batch[i] = completion{}
		}
		spare = batch
	}
}

func (s *Sink) complete(c completion) {
	if c.slot {
		<-s.window
	}
	s.observe(c.err)
	err := s.classify(c.r, c.err)
	if err == nil && s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("record written", "topic", c.m.Topic, "kafka_topic", c.r.Topic, "partition", c.r.Partition, "offset", c.r.Offset)
	}
	c.done(err)
	s.pending.Done()
}

// Close stops intake (later writes get bridge.ErrClosed), flushes what is
// buffered until ctx ends, so written messages are still acknowledged to
// MQTT, then closes the client: records still buffered then fail, stay
// un-acked, and the broker redelivers them. Call it after the workers
// stopped.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	if s.cl == nil { // never started
		s.cancelProduce()
		return nil
	}

	err := s.cl.Flush(ctx)
	if err != nil {
		err = fmt.Errorf("flush kafka sink: %w", err)
		s.cancelProduce()
	}
	s.mon.Close()
	s.repairer.Close()
	s.cl.Close()
	// Every promise has run now (Close fails what was left), so pending
	// only waits for the completion loop to call the last done callbacks.
	s.pending.Wait()
	s.queue.close()
	<-s.loopDone
	s.cancelProduce()
	return err
}
