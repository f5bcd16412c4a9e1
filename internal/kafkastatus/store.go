// Package kafkastatus keeps command statuses (bridge.StatusStore) on a
// compacted Kafka topic, nr.command-status by default. Every replica reads
// all of its partitions from the start (no consumer group) into a bounded
// in-memory view, answers reads and watches from the view, and writes
// through the topic: a write returns once the replica has read its own
// record back, so a replica reads what it wrote, and every replica sees
// the same statuses in the same order per key. The view keeps the newest
// commands of each org (see view); a reply to a command it evicted is
// still written to the topic (RecordReply), so no replica misses it.
package kafkastatus

import (
	"context"
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
	MaxCommands int    `env:"KAFKA_STATUS_MAX_COMMANDS" envDefault:"10000" desc:"command statuses each replica holds in memory per org: the newest by acceptance; older ones answer 404 no longer held by this replica"`
	MaxBytes    int64  `env:"KAFKA_STATUS_MAX_BYTES" envDefault:"67108864" desc:"bytes of status records each replica holds in memory (about), for all orgs; over it the org holding the most loses its oldest first"`
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

// recordRoom is what a record value leaves free below the topic's limit
// for its key (at most about 1.2 KiB) and the record batch framing.
const recordRoom = 2048

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
	// conn and retention recreate the topic when the cluster lost it.
	conn      kafkaconn.Config
	retention time.Duration
	cl        *kgo.Client
	adm       *kadm.Client
	log       *slog.Logger
	now       func() time.Time
	// maxRecord is the largest record value written: the topic's limit
	// (KAFKA_MAX_MESSAGE_BYTES or its max.message.bytes) minus room for
	// the key and the batch framing.
	maxRecord int

	mu       sync.Mutex
	view     *view
	applied  map[int32]int64 // next offset to read, per partition
	progress chan struct{}   // closed and replaced after each batch applied

	stripes [lockStripes]sync.Mutex // serialise Puts of one key

	ctx     context.Context // the store's life: cancelled by Close
	cancel  context.CancelFunc
	done    chan struct{}  // closed when the reading goroutine ended
	watches sync.WaitGroup // one goroutine per running Watch

	// Listings of the topic's end offsets (catchUp) are shared: callers
	// waiting for one that has not started join it, so a flood of replies
	// to unknown commands costs one listing per round trip, not one each.
	lmu      sync.Mutex
	next     *listing // waiting to start, nil when none
	listing  bool     // the listing goroutine runs
	listings sync.WaitGroup
}

// listing is one ListEndOffsets shared by its callers.
type listing struct {
	done   chan struct{}
	target map[int32]int64
	err    error
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
	adm := kadm.NewClient(cl)
	limits := kafkaconn.NewLimits(conn)
	if err := limits.Load(ctx, adm, cfg.Topic); err != nil {
		log.Warn("status topic size limit unknown, using KAFKA_MAX_MESSAGE_BYTES", "topic", cfg.Topic, "err", err)
	}
	ends, err := adm.ListEndOffsets(ctx, cfg.Topic)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("list end offsets of %s: %w", cfg.Topic, err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		cfg:       cfg,
		conn:      conn,
		retention: retention,
		cl:        cl,
		adm:       adm,
		maxRecord: int(limits.MaxBytes(cfg.Topic)) - recordRoom,
		log:       log,
		now:       time.Now,
		view:      newView(cfg.MaxCommands, cfg.MaxBytes, retention),
		applied:   map[int32]int64{},
		progress:  make(chan struct{}),
		ctx:       rctx,
		cancel:    cancel,
		done:      make(chan struct{}),
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

// repairInterval is how often at most the store recreates its topic while
// reads say it does not exist.
const repairInterval = 2 * time.Second

// repairTopic recreates the status topic after the cluster lost it
// (kafkaconn.Repair with the same setup as at start) and reads it again
// from its start; the view keeps what it held, so statuses of commands
// from before the loss stay readable on this replica.
func (s *Store) repairTopic(ctx context.Context, recreated bool) {
	ctx, cancel := context.WithTimeout(ctx, repairInterval)
	defer cancel()
	ensure := func(ctx context.Context) error {
		return ensureTopic(ctx, s.cl, s.conn, s.cfg.Topic, s.retention, s.log)
	}
	purged, err := kafkaconn.Repair(ctx, s.cl, ensure, recreated, []string{s.cfg.Topic}, nil)
	switch {
	case err != nil:
		s.log.Error("status topic missing and not recreated", "topic", s.cfg.Topic, "err", err)
	case len(purged) > 0:
		s.log.Warn("status topic was missing (the cluster lost its state, or it was deleted): recreated", "topic", s.cfg.Topic)
	}
}

// read applies every record of the topic to the view until ctx ends.
func (s *Store) read(ctx context.Context) {
	defer close(s.done)
	lastWarn, lastRepair := time.Time{}, time.Time{}
	for {
		fetches := s.cl.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		missing, recreated := false, false
		fetches.EachError(func(topic string, p int32, err error) {
			missing = missing || kafkaconn.TopicMissing(err)
			recreated = recreated || errors.Is(err, kerr.UnknownTopicID)
			if time.Since(lastWarn) > 5*time.Second {
				lastWarn = time.Now()
				s.log.Warn("reading the status topic failed, retrying", "topic", topic, "partition", p, "err", err)
			}
		})
		if missing && time.Since(lastRepair) > repairInterval {
			lastRepair = time.Now()
			s.repairTopic(ctx, recreated)
		}
		now := s.now()
		s.mu.Lock()
		fetches.EachRecord(func(r *kgo.Record) {
			s.applied[r.Partition] = r.Offset + 1
			if r.Value == nil {
				return // a tombstone: nothing to add
			}
			rec, err := s.decodeRecord(r.Value)
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

// Get implements bridge.StatusStore from the view: bridge.ErrStatusEvicted
// for a command the view no longer holds.
func (s *Store) Get(_ context.Context, org, correlationID string) (*bridge.CommandStatus, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := commandKey(org, correlationID)
	e := s.view.held(key, s.now())
	if e == nil || e.cmd == nil {
		if s.view.evicted(org, key) != nil {
			return nil, 0, bridge.ErrStatusEvicted
		}
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
	stripe := s.stripe(key)
	stripe.Lock()
	defer stripe.Unlock()

	s.mu.Lock()
	var held *bridge.CommandStatus
	e := s.view.held(key, s.now())
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
	if err := s.write(ctx, recs); err != nil {
		if kafkaconn.Permanent(err) {
			// Records are cut to fit the topic, so this is a topic whose
			// limit was lowered since: the same classification as every
			// other write, so logs and metrics say rejected, not retried.
			return 0, fmt.Errorf("put status %s: %w: %w", key, bridge.ErrRejected, err)
		}
		return 0, fmt.Errorf("put status %s: %w", key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.view.held(key, s.now()); e != nil {
		return e.rev, nil
	}
	return 0, nil // evicted at once: older than the org's newest commands
}

// stripe is the lock that serialises the writes of key.
func (s *Store) stripe(key string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return &s.stripes[h.Sum32()%lockStripes]
}

// write produces recs and waits until the view read them back.
func (s *Store) write(ctx context.Context, recs []*kgo.Record) error {
	if err := s.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return err
	}
	target := map[int32]int64{}
	for _, r := range recs {
		target[r.Partition] = max(target[r.Partition], r.Offset+1)
	}
	if err := s.waitApplied(ctx, target); err != nil {
		return fmt.Errorf("written, not read back yet: %w", err)
	}
	return nil
}

// catchUp waits until the view read everything the topic held when it
// was called: what other replicas wrote until then.
func (s *Store) catchUp(ctx context.Context) error {
	s.lmu.Lock()
	l := s.next
	if l == nil {
		l = &listing{done: make(chan struct{})}
		s.next = l
		if !s.listing {
			s.listing = true
			s.listings.Add(1)
			go s.list()
		}
	}
	s.lmu.Unlock()
	select {
	case <-l.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if l.err != nil {
		return l.err
	}
	return s.waitApplied(ctx, l.target)
}

// list runs the listings callers wait for, one after the other, until
// none waits; Close ends it (the client closes).
func (s *Store) list() {
	defer s.listings.Done()
	for {
		s.lmu.Lock()
		l := s.next
		s.next = nil
		if l == nil {
			s.listing = false
			s.lmu.Unlock()
			return
		}
		s.lmu.Unlock()
		ctx, cancel := context.WithTimeout(s.ctx, defaultTimeout)
		ends, err := s.adm.ListEndOffsets(ctx, s.cfg.Topic)
		cancel()
		if err == nil {
			err = ends.Error()
		}
		if err != nil {
			l.err = fmt.Errorf("list end offsets of %s: %w", s.cfg.Topic, err)
		} else {
			l.target = map[int32]int64{}
			ends.Each(func(o kadm.ListedOffset) {
				if o.Offset > 0 {
					l.target[o.Partition] = o.Offset
				}
			})
		}
		close(l.done)
	}
}

// RecordReply implements bridge.ReplyRecorder: for a command this replica
// evicted (or that another replica wrote and this one had not read yet),
// it writes r's reply record to the topic, so that every replica holding
// the command, and every replica rebuilt later, sees it replied.
func (s *Store) RecordReply(ctx context.Context, org, correlationID string, r bridge.Reply) (recorded, first bool, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	key := commandKey(org, correlationID)
	if err := s.catchUp(ctx); err != nil {
		return false, false, fmt.Errorf("record reply %s: %w", key, err)
	}
	stripe := s.stripe(key)
	stripe.Lock()
	defer stripe.Unlock()

	s.mu.Lock()
	if e := s.view.held(key, s.now()); e != nil && e.cmd != nil {
		s.mu.Unlock()
		return false, false, fmt.Errorf("record reply %s: %w", key, bridge.ErrStatusConflict)
	}
	n := s.view.evicted(org, key)
	if n == nil || n.known && !n.broadcast && n.node != r.Node {
		s.mu.Unlock()
		return false, false, nil
	}
	if n.replied && !n.broadcast {
		s.mu.Unlock()
		return true, false, nil // recorded already (MQTT delivers a reply twice at times)
	}
	first = !n.final
	rec := record{Kind: kindReply, Org: org, CorrelationID: correlationID, IssuedAt: n.issuedAt, AcceptedAt: n.at, Reply: &r}
	s.mu.Unlock()

	kr, err := s.encode(replyKey(org, correlationID, r.Node), rec)
	if err != nil {
		return false, false, fmt.Errorf("record reply %s: %w", key, err)
	}
	if err := s.write(ctx, []*kgo.Record{kr}); err != nil {
		return false, false, fmt.Errorf("record reply %s: %w", key, err)
	}
	return true, first, nil
}

// records are the records st adds to held.
func (s *Store) records(key string, held, st *bridge.CommandStatus) ([]*kgo.Record, error) {
	var recs []*kgo.Record
	add := func(k string, r record) error {
		kr, err := s.encode(k, r)
		if err != nil {
			return fmt.Errorf("put status %s: %w", key, err)
		}
		recs = append(recs, kr)
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
		err := add(replyKey(st.Org, st.CorrelationID, r.Node), record{Kind: kindReply, Org: st.Org, CorrelationID: st.CorrelationID, IssuedAt: st.IssuedAt, AcceptedAt: st.AcceptedAt, Reply: &r})
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
	e := s.view.watch(org, commandKey(org, correlationID), ch)
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
	s.listings.Wait()
	s.watches.Wait()
	return nil
}

var _ bridge.StatusStore = (*Store)(nil)
