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
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
)

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
	started   atomic.Bool // Start ran the reader, which closes done
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

// New returns a store on the status topic cfg.Topic; it neither talks to
// the cluster nor starts goroutines: Start does. retention is how long a
// status is kept: the largest command TTL plus the grace period.
func New(conn kafkaconn.Config, cfg Config, retention time.Duration, log *slog.Logger) (*Store, error) {
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
	rctx, cancel := context.WithCancel(context.Background())
	return &Store{
		cfg:       cfg,
		conn:      conn,
		retention: retention,
		cl:        cl,
		adm:       kadm.NewClient(cl),
		log:       log,
		now:       time.Now,
		view:      newView(cfg.MaxCommands, cfg.MaxBytes, retention),
		applied:   map[int32]int64{},
		progress:  make(chan struct{}),
		ctx:       rctx,
		cancel:    cancel,
		done:      make(chan struct{}),
	}, nil
}

// Start creates the topic when conn.CreateTopics (compacted, with
// retention.ms = retention, since records of finished commands must go
// too), starts reading it from the start and returns once the view caught
// up with what the topic held (at most 30 s; later records keep coming).
// The reader runs until Close.
func (s *Store) Start(ctx context.Context) error {
	if err := ensureTopic(ctx, s.cl, s.conn, s.cfg.Topic, s.retention, s.log); err != nil {
		return err
	}
	limits := kafkaconn.NewLimits(s.conn)
	if err := limits.Load(ctx, s.adm, s.cfg.Topic); err != nil {
		s.log.Warn("status topic size limit unknown, using KAFKA_MAX_MESSAGE_BYTES", "topic", s.cfg.Topic, "err", err)
	}
	s.maxRecord = int(limits.MaxBytes(s.cfg.Topic)) - recordRoom
	ends, err := s.adm.ListEndOffsets(ctx, s.cfg.Topic)
	if err != nil {
		return fmt.Errorf("list end offsets of %s: %w", s.cfg.Topic, err)
	}
	s.started.Store(true)
	go s.read(s.ctx)

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
			return ctx.Err()
		}
		s.log.Warn("status view not caught up in time; older statuses appear as they are read", "topic", s.cfg.Topic, "err", err)
	}
	s.log.Info("status topic ready", "topic", s.cfg.Topic, "retention", s.retention.String())
	return nil
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
	if s.started.Load() {
		<-s.done
	}
	s.listings.Wait()
	s.watches.Wait()
	return nil
}

var _ bridge.StatusStore = (*Store)(nil)
