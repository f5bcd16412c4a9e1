package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
)

// Publisher publishes one command to MQTT and returns once the broker
// acknowledged it; *bridge.Publisher implements it. The source decides
// between retrying and dead-lettering with bridge.Retryable.
type Publisher interface {
	Publish(ctx context.Context, t bridge.Target, c bridge.Command, source string) (bridge.PublishResult, error)
	// Refused counts a command refused before it reached Publish (bad
	// subject or key, a body that does not parse).
	Refused(source string, err error)
	// DeadLettered counts a command written to the dead-letter subject or
	// topic because of err.
	DeadLettered(err error)
}

// Retry backoff while commands cannot be published (MQTT broker down, no
// PUBACK in time) or dead-lettered (Kafka down).
const (
	retryMin = 500 * time.Millisecond
	retryMax = 10 * time.Second
)

// commitTimeout bounds an offset commit, which also runs during shutdown.
const commitTimeout = 10 * time.Second

// Source is the Kafka commands source: a member of consumer group
// KAFKA_GROUP on KAFKA_COMMANDS_TOPIC. It owns its franz-go client.
//
// It works in rounds: poll up to KAFKA_COMMAND_POLL_RECORDS records, publish
// each partition's records in order (KAFKA_COMMAND_CONCURRENCY partitions at
// a time), commit each partition's finished prefix, then let the group
// rebalance. Rebalances are blocked during a round (BlockRebalanceOnPoll),
// so a commit is always for partitions this member still owns; when the
// group wants to rebalance, the round is cut short. A record that could not
// be finished (broker down, shutdown) is not committed, and the partition
// is rewound to it, so it is tried again after a backoff, or read by the
// partition's next owner: nothing is skipped. Retrying ends when the
// command's TTL runs out; it is then dead-lettered as expired.
type Source struct {
	conn   kafkaconn.Config
	cfg    Config
	pub    Publisher
	limits bridge.CommandLimits
	dlq    *kafkaconn.Limits
	cl     *kgo.Client
	log    *slog.Logger

	produceCtx    context.Context // dead-letter produces; ends after the client closed
	cancelProduce context.CancelFunc

	mu          sync.Mutex
	started     bool
	stopped     bool
	cancelRound context.CancelFunc // cuts the current round short
	stopIntake  context.CancelFunc // no new poll, no new record
	stopWork    context.CancelFunc // abandon records in progress
	done        chan struct{}      // closed when the poll loop returned
}

// New returns a source reading conn.CommandsTopic as a member of
// conn.Group and publishing through pub; commands are parsed with limits.
// It does not connect yet: Start does.
func New(conn kafkaconn.Config, cfg Config, pub Publisher, limits bridge.CommandLimits, log *slog.Logger) (*Source, error) {
	s := &Source{
		conn:   conn,
		cfg:    cfg,
		pub:    pub,
		limits: limits,
		dlq:    kafkaconn.NewLimits(conn),
		log:    log.With("component", "source", "backbone", "kafka"),
		done:   make(chan struct{}),
	}
	opts, err := kafkaconn.Options(conn, s.log)
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		kgo.ConsumerGroup(conn.Group),
		kgo.ConsumeTopics(conn.CommandsTopic),
		// Offsets are committed by hand, only for finished records, and
		// only while no rebalance can move the partition elsewhere.
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsCallbackBlocked(func(context.Context, *kgo.Client) { s.hurry() }),
		// Nothing to do on a revoke or loss: a round's commits happen
		// before it allows the rebalance, and nothing is kept across
		// rounds. The cooperative balancer also calls these with no
		// partitions, which is not worth a log line.
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			if len(m) > 0 {
				s.log.Info("command partitions assigned", "partitions", m)
			}
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			if len(m) > 0 {
				s.log.Info("command partitions revoked", "partitions", m)
			}
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			if len(m) > 0 {
				s.log.Warn("command partitions lost", "partitions", m)
			}
		}),
		kgo.ProducerBatchMaxBytesFn(s.dlq.MaxBytes),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	s.cl = cl
	s.produceCtx, s.cancelProduce = context.WithCancel(context.Background())
	return s, nil
}

// Start joins the group and starts reading in the background until Stop.
// It reads the dead-letter topic's size limit first (for at most 10 s; on
// failure KAFKA_MAX_MESSAGE_BYTES applies).
func (s *Source) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return fmt.Errorf("start kafka commands source: %w", bridge.ErrClosed)
	}
	s.started = true
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := s.dlq.Load(lctx, kadm.NewClient(s.cl), s.conn.DLQTopic); err != nil {
		s.log.Warn("dead-letter topic size limit unknown, using KAFKA_MAX_MESSAGE_BYTES", "err", err)
	}
	cancel()
	intake, stopIntake := context.WithCancel(context.WithoutCancel(ctx))
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	s.stopIntake, s.stopWork = stopIntake, stopWork
	go s.run(intake, work)
	s.log.Info("reading commands", "topic", s.conn.CommandsTopic, "group", s.conn.Group)
	return nil
}

// run is the poll loop: one round per poll, then a backoff when a round
// left records to retry.
func (s *Source) run(intake, work context.Context) {
	defer close(s.done)
	backoff := bridge.Backoff(retryMin, retryMax)
	attempt := 0
	for intake.Err() == nil {
		fetches := s.cl.PollRecords(intake, s.cfg.PollRecords)
		if fetches.IsClientClosed() || intake.Err() != nil {
			// Records polled but not processed are not committed: the
			// partition's next reader starts from the last commit.
			s.cl.AllowRebalance()
			return
		}
		fetchFailed := false
		fetches.EachError(func(topic string, partition int32, err error) {
			fetchFailed = true
			s.log.Warn("fetching commands failed", "topic", topic, "partition", partition, "err", err)
		})
		retry, err := s.round(intake, work, fetches)
		s.cl.AllowRebalance()
		if !retry && !fetchFailed {
			attempt = 0
			continue
		}
		if retry {
			s.log.Warn("commands not published yet, retrying", "err", err, "attempt", attempt)
		}
		select {
		case <-time.After(backoff(attempt)):
		case <-intake.Done():
		}
		attempt++
	}
}

// hurry cuts the current round short because the group wants to
// rebalance; unfinished records are rewound and not committed.
func (s *Source) hurry() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancelRound != nil {
		s.log.Info("rebalance waiting: cutting the current round short")
		s.cancelRound()
	}
}

// round publishes the polled records and commits what it finished. It
// returns true (with an error from one partition) when records are left to
// retry.
func (s *Source) round(intake, work context.Context, fetches kgo.Fetches) (bool, error) {
	rctx, cancel := context.WithCancel(work)
	s.mu.Lock()
	s.cancelRound = cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.cancelRound = nil
		s.mu.Unlock()
		cancel()
	}()

	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		commit   []*kgo.Record
		rewind   = map[string]map[int32]kgo.EpochOffset{}
		retryErr error
		sem      = make(chan struct{}, s.cfg.Concurrency)
	)
	for _, p := range byPartition(fetches) {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			last, next, err := s.partition(intake, rctx, p.recs)
			mu.Lock()
			defer mu.Unlock()
			if last != nil {
				commit = append(commit, last)
			}
			if next != nil {
				if rewind[p.topic] == nil {
					rewind[p.topic] = map[int32]kgo.EpochOffset{}
				}
				rewind[p.topic][p.partition] = kgo.EpochOffset{Epoch: next.LeaderEpoch, Offset: next.Offset}
				if err != nil && retryErr == nil && rctx.Err() == nil {
					retryErr = err
				}
			}
		}()
	}
	wg.Wait()

	// Polled but unfinished records are fetched again from the first of
	// them; this round still owns the partitions (rebalances are blocked).
	s.cl.SetOffsets(rewind)
	if len(commit) > 0 {
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(work), commitTimeout)
		err := s.cl.CommitRecords(cctx, commit...)
		ccancel()
		if err != nil {
			s.log.Warn("committing command offsets failed: these commands may be published again", "err", err)
		}
	}
	return retryErr != nil, retryErr
}

// partitionRecords are the records of one partition in a poll, in offset
// order.
type partitionRecords struct {
	topic     string
	partition int32
	recs      []*kgo.Record
}

// byPartition groups a poll's records by partition, so that each partition
// is handled by one goroutine even if the poll holds several fetches of it.
func byPartition(fetches kgo.Fetches) []*partitionRecords {
	type key struct {
		topic     string
		partition int32
	}
	var out []*partitionRecords
	idx := map[key]*partitionRecords{}
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		k := key{p.Topic, p.Partition}
		pr := idx[k]
		if pr == nil {
			pr = &partitionRecords{topic: p.Topic, partition: p.Partition}
			idx[k] = pr
			out = append(out, pr)
		}
		pr.recs = append(pr.recs, p.Records...)
	})
	return out
}

// partition publishes one partition's records in order and stops at the
// first that cannot be finished now. It returns the last finished record
// (nil if none) and the first unfinished one (nil if all finished) with its
// error.
func (s *Source) partition(intake, ctx context.Context, recs []*kgo.Record) (last, next *kgo.Record, err error) {
	for _, r := range recs {
		if intake.Err() != nil || ctx.Err() != nil {
			return last, r, nil
		}
		if err := s.handle(ctx, r); err != nil {
			return last, r, err
		}
		last = r
	}
	return last, nil, nil
}

// Stop stops reading: no new poll and no new record; records in progress
// are finished and committed until ctx ends, then abandoned (not committed,
// read again later). Then it leaves the group, so the partitions move to
// another member at once, and closes the client. Calling it again is a
// no-op.
func (s *Source) Stop(ctx context.Context) error {
	s.mu.Lock()
	started, stopped := s.started, s.stopped
	s.started, s.stopped = true, true // a later Start fails
	s.mu.Unlock()
	if stopped {
		return nil
	}
	if !started {
		s.cl.Close()
		s.cancelProduce()
		return nil
	}
	s.stopIntake()
	var err error
	select {
	case <-s.done:
	case <-ctx.Done():
		err = fmt.Errorf("stop kafka commands source: %w: commands in progress left for redelivery", ctx.Err())
		s.stopWork()
		<-s.done
	}
	s.stopWork()
	s.cl.AllowRebalance()
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	if lerr := s.cl.LeaveGroupContext(lctx); lerr != nil && !errors.Is(lerr, context.DeadlineExceeded) {
		s.log.Warn("leaving the consumer group failed", "err", lerr)
	}
	cancel()
	s.cl.CloseAllowingRebalance()
	s.cancelProduce()
	s.log.Info("stopped reading commands")
	return err
}
