// Package kafkastatus keeps command statuses (bridge.StatusStore) on a
// compacted Kafka topic, nr.command-status by default. Every replica reads
// all of its partitions from the start (no consumer group) into a bounded
// in-memory view, answers reads and watches from the view, and writes
// through the topic: a write returns once the replica has read its own
// record back, so a replica reads what it wrote, and every replica sees
// the same statuses in the same order per key.
package kafkastatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
)

// Config is the status topic and the bounds of the view. Defaults are in
// the envDefault tags.
type Config struct {
	Topic       string `env:"KAFKA_STATUS_TOPIC" envDefault:"nr.command-status" desc:"compacted topic of command statuses, read by every replica"`
	MaxCommands int    `env:"KAFKA_STATUS_MAX_COMMANDS" envDefault:"10000" desc:"command statuses each replica holds in memory; the least recently used beyond it are forgotten (404)"`
	MaxBytes    int64  `env:"KAFKA_STATUS_MAX_BYTES" envDefault:"67108864" desc:"bytes of status records each replica holds in memory (about); the least recently used beyond it are forgotten"`
}

// Validate checks the values against conn's other topics; errors name the
// variable.
func (c *Config) Validate(conn kafkaconn.Config) error {
	if !kafkaconn.ValidTopic(c.Topic) {
		return fmt.Errorf("KAFKA_STATUS_TOPIC %q: want 1 to 249 characters of a-z A-Z 0-9 . _ -, not . or ..", c.Topic)
	}
	for _, t := range conn.Topics() {
		if t == c.Topic {
			return fmt.Errorf("KAFKA_STATUS_TOPIC %q must differ from the events, replies, commands and dead-letter topics", c.Topic)
		}
	}
	if c.MaxCommands < 1 {
		return fmt.Errorf("KAFKA_STATUS_MAX_COMMANDS must be >= 1, got %d", c.MaxCommands)
	}
	if c.MaxBytes < 1<<20 {
		return fmt.Errorf("KAFKA_STATUS_MAX_BYTES must be at least 1048576, got %d", c.MaxBytes)
	}
	return nil
}

// Bounds of the store's own waits.
const (
	defaultTimeout = 10 * time.Second
	catchUpTimeout = 30 * time.Second
	lockStripes    = 64
)

// Store is the status topic and this replica's view of it; it implements
// bridge.StatusStore and is safe for concurrent use. It owns a franz-go
// client and one reading goroutine; Close stops both.
//
// Put compares the revision with this replica's view, so the check is
// exact between callers of one replica and best effort across replicas:
// what two replicas write at once is merged rather than lost, because
// each node's reply is a record of its own and the command record only
// moves forward (see mergeCommand).
type Store struct {
	cfg Config
	cl  *kgo.Client
	log *slog.Logger
	now func() time.Time

	mu       sync.Mutex
	view     *view
	applied  map[int32]int64 // next offset to read, per partition
	progress chan struct{}   // closed and replaced after each batch applied

	stripes [lockStripes]sync.Mutex // serialise Puts of one key

	cancel  context.CancelFunc
	done    chan struct{}  // closed when the reading goroutine ended
	watches sync.WaitGroup // one goroutine per running Watch
}

// New connects, creates the topic when conn.CreateTopics (compacted, with
// retention.ms = retention, since records of finished commands must go
// too), starts reading it from the start and returns once the view caught
// up with what the topic held (at most 30 s; later records keep coming).
// retention is how long a status is kept: the largest command TTL plus
// the grace period.
func New(ctx context.Context, conn kafkaconn.Config, cfg Config, retention time.Duration, log *slog.Logger) (*Store, error) {
	log = log.With("component", "status", "backbone", "kafka")
	opts, err := kafkaconn.Options(conn, log)
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		kgo.ConsumeTopics(cfg.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DefaultProduceTopic(cfg.Topic),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka status client: %w", err)
	}
	if err := ensureTopic(ctx, cl, conn, cfg.Topic, retention, log); err != nil {
		cl.Close()
		return nil, err
	}
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, cfg.Topic)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("list end offsets of %s: %w", cfg.Topic, err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		cfg:      cfg,
		cl:       cl,
		log:      log,
		now:      time.Now,
		view:     newView(cfg.MaxCommands, cfg.MaxBytes, retention),
		applied:  map[int32]int64{},
		progress: make(chan struct{}),
		cancel:   cancel,
		done:     make(chan struct{}),
	}
	go s.read(rctx)

	target := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			target[o.Partition] = o.Offset
		}
	})
	cctx, ccancel := context.WithTimeout(ctx, catchUpTimeout)
	defer ccancel()
	if err := s.waitApplied(cctx, target); err != nil {
		if ctx.Err() != nil {
			_ = s.Close(context.Background())
			return nil, ctx.Err()
		}
		log.Warn("status view not caught up in time; older statuses appear as they are read", "topic", cfg.Topic, "err", err)
	}
	log.Info("status topic ready", "topic", cfg.Topic, "retention", retention.String())
	return s, nil
}

// ensureTopic creates the status topic, or checks that it exists.
func ensureTopic(ctx context.Context, cl *kgo.Client, conn kafkaconn.Config, topic string, retention time.Duration, log *slog.Logger) error {
	if err := kafkaconn.WaitReachable(ctx, cl, log); err != nil {
		return err
	}
	adm := kadm.NewClient(cl)
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return fmt.Errorf("describe topic %s: %w", topic, err)
	}
	if d, ok := details[topic]; ok && d.Err == nil {
		return nil
	} else if ok && !errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
		return fmt.Errorf("describe topic %s: %w", topic, d.Err)
	}
	if !conn.CreateTopics {
		return fmt.Errorf("topic %s (KAFKA_STATUS_TOPIC) does not exist and KAFKA_CREATE_TOPICS=false: create it compacted (cleanup.policy=compact,delete) or set KAFKA_CREATE_TOPICS=true", topic)
	}
	retentionMS := strconv.FormatInt(retention.Milliseconds(), 10)
	configs := map[string]*string{
		"cleanup.policy": ptr("compact,delete"),
		"retention.ms":   &retentionMS,
	}
	resp, err := adm.CreateTopic(ctx, conn.TopicPartitions, conn.ReplicationFactor, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s (compacted, retention.ms %s; KAFKA_TOPIC_PARTITIONS, KAFKA_REPLICATION_FACTOR): %w", topic, retentionMS, err)
	}
	return nil
}

func ptr(s string) *string { return &s }

// read applies every record of the topic to the view until ctx ends.
func (s *Store) read(ctx context.Context) {
	defer close(s.done)
	lastWarn := time.Time{}
	for {
		fetches := s.cl.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if time.Since(lastWarn) > 5*time.Second {
				lastWarn = time.Now()
				s.log.Warn("reading the status topic failed, retrying", "topic", topic, "partition", p, "err", err)
			}
		})
		now := s.now()
		s.mu.Lock()
		fetches.EachRecord(func(r *kgo.Record) {
			s.applied[r.Partition] = r.Offset + 1
			if r.Value == nil {
				return // a tombstone: nothing to add
			}
			rec, err := decodeRecord(r.Value)
			if err != nil {
				s.log.Warn("undecodable status record skipped", "partition", r.Partition, "offset", r.Offset, "err", err)
				return
			}
			s.view.apply(rec, int64(len(r.Key)+len(r.Value)), r.Timestamp, now)
		})
		close(s.progress)
		s.progress = make(chan struct{})
		s.mu.Unlock()
	}
}

// waitApplied blocks until the view read past the offsets in target.
func (s *Store) waitApplied(ctx context.Context, target map[int32]int64) error {
	for {
		s.mu.Lock()
		done := true
		for p, o := range target {
			if s.applied[p] < o {
				done = false
				break
			}
		}
		progress := s.progress
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-progress:
		case <-s.done:
			return bridge.ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Get implements bridge.StatusStore from the view.
func (s *Store) Get(_ context.Context, org, correlationID string) (*bridge.CommandStatus, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.view.get(commandKey(org, correlationID), false, s.now())
	if e == nil || e.cmd == nil {
		return nil, 0, bridge.ErrStatusNotFound
	}
	return e.doc(), e.rev, nil
}

// Put implements bridge.StatusStore: it writes what st adds to the status
// held at rev (the command record when it changed, a reply record per new
// reply) and returns once the view read them back.
func (s *Store) Put(ctx context.Context, st *bridge.CommandStatus, rev uint64) (uint64, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	key := commandKey(st.Org, st.CorrelationID)
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	stripe := &s.stripes[h.Sum32()%lockStripes]
	stripe.Lock()
	defer stripe.Unlock()

	s.mu.Lock()
	var held *bridge.CommandStatus
	e := s.view.get(key, false, s.now())
	switch {
	case e != nil && e.cmd != nil && e.rev != rev, (e == nil || e.cmd == nil) && rev != 0:
		s.mu.Unlock()
		return 0, fmt.Errorf("put status %s: %w", key, bridge.ErrStatusConflict)
	case e != nil && e.cmd != nil:
		held = e.doc()
	}
	s.mu.Unlock()

	recs, err := s.records(key, held, st)
	if err != nil {
		return 0, err
	}
	if len(recs) == 0 {
		return rev, nil
	}
	if err := s.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return 0, fmt.Errorf("put status %s: %w", key, err)
	}
	target := map[int32]int64{}
	for _, r := range recs {
		target[r.Partition] = max(target[r.Partition], r.Offset+1)
	}
	if err := s.waitApplied(ctx, target); err != nil {
		return 0, fmt.Errorf("put status %s: written, not read back yet: %w", key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.view.get(key, false, s.now()); e != nil {
		return e.rev, nil
	}
	return 0, nil // evicted at once: the view is too small
}

// records are the records st adds to held.
func (s *Store) records(key string, held, st *bridge.CommandStatus) ([]*kgo.Record, error) {
	var recs []*kgo.Record
	add := func(k string, r record) error {
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("put status %s: %w", key, err)
		}
		recs = append(recs, &kgo.Record{Key: []byte(k), Value: b})
		return nil
	}
	if held == nil || !sameCommandPart(held, st) {
		err := add(key, record{Kind: kindCommand, Org: st.Org, CorrelationID: st.CorrelationID, Command: commandPart(st)})
		if err != nil {
			return nil, err
		}
	}
	for _, r := range st.Replies {
		if held != nil && sameCommand(held, st) && held.HasReplyFrom(r.Node) {
			continue
		}
		err := add(replyKey(st.Org, st.CorrelationID, r.Node), record{Kind: kindReply, Org: st.Org, CorrelationID: st.CorrelationID, IssuedAt: st.IssuedAt, Reply: &r})
		if err != nil {
			return nil, err
		}
	}
	return recs, nil
}

// Watch implements bridge.StatusStore from the view's notifications: the
// reading goroutine offers each new status to the channel, and a
// goroutine per watch unregisters it when ctx ends or the store closes.
func (s *Store) Watch(ctx context.Context, org, correlationID string) (<-chan *bridge.CommandStatus, error) {
	select {
	case <-s.done:
		return nil, bridge.ErrClosed
	default:
	}
	ch := make(chan *bridge.CommandStatus, 1)
	s.mu.Lock()
	e := s.view.watch(commandKey(org, correlationID), ch, s.now())
	s.mu.Unlock()
	s.watches.Add(1)
	go func() {
		defer s.watches.Done()
		select {
		case <-ctx.Done():
		case <-s.done:
		}
		s.mu.Lock()
		s.view.unwatch(e, ch)
		s.mu.Unlock()
	}()
	return ch, nil
}

// Close stops reading and closes the client; every watch channel closes.
// Writes in progress fail.
func (s *Store) Close(_ context.Context) error {
	s.cancel()
	s.cl.Close()
	<-s.done
	s.watches.Wait()
	return nil
}

var _ bridge.StatusStore = (*Store)(nil)
