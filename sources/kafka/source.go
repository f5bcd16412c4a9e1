package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/backoff"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
)

// Publisher publishes one command to MQTT and returns once the broker
// acknowledged it; *publisher.Publisher implements it. The source decides
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

// Source is the Kafka commands source: a member of the commands consumer
// group (see Group) on KAFKA_COMMANDS_TOPIC. It owns its franz-go client.
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
	conn       kafkaconn.Config
	cfg        Config
	pub        Publisher
	limits     bridge.CommandLimits
	orgID      string // ORG_ID, "" when unscoped
	instanceID string // group instance ID (static membership), "" for none
	group      string // the consumer group, see Group
	dlq        *kafkaconn.Limits
	base       []kgo.Opt   // connection options, for the admin client of Start
	opts       []kgo.Opt   // base plus the consumer's
	cl         *kgo.Client // created by Start
	log        *slog.Logger

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

// scoped is what the source asks of its publisher to learn the bridge's
// scope (ORG_ID); *publisher.Publisher has it.
type scoped interface{ OrgID() string }

// identified is what the source asks of its publisher for a name that is
// stable per replica and unique across replicas: its MQTT client ID
// (<MQTT_CLIENT_ID>-pub), which becomes the group instance ID (static
// membership, see New); *publisher.Publisher has it.
type identified interface{ ClientID() string }

// New returns a source reading conn.CommandsTopic as a member of the
// commands group (conn.CommandsGroup of the publisher's ORG_ID, see Group)
// and publishing through pub; commands are parsed with limits. It does not
// connect yet: Start does.
func New(conn kafkaconn.Config, cfg Config, pub Publisher, limits bridge.CommandLimits, log *slog.Logger) (*Source, error) {
	orgID, instanceID := "", ""
	if sp, ok := pub.(scoped); ok {
		orgID = sp.OrgID()
	}
	if ip, ok := pub.(identified); ok {
		instanceID = ip.ClientID()
	}
	s := &Source{
		conn:       conn,
		cfg:        cfg,
		pub:        pub,
		limits:     limits,
		orgID:      orgID,
		instanceID: instanceID,
		group:      conn.CommandsGroup(orgID),
		dlq:        kafkaconn.NewLimits(conn),
		log:        log.With("component", "source", "backbone", "kafka"),
		done:       make(chan struct{}),
	}
	base, err := kafkaconn.Options(conn, s.log)
	if err != nil {
		return nil, err
	}
	s.base = base
	opts := append(base[:len(base):len(base)],
		kgo.ConsumerGroup(s.group),
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
	if instanceID != "" {
		// Static membership: a replica that crashes and comes back within
		// the session timeout gets its partitions back at its join,
		// instead of the group waiting out the dead member's session
		// (45 s) before it rebalances. Stop leaves explicitly.
		opts = append(opts, kgo.InstanceID(instanceID))
	}
	s.opts = opts
	s.produceCtx, s.cancelProduce = context.WithCancel(context.Background())
	return s, nil
}

// Group is the consumer group the source joins: KAFKA_GROUP when set, else
// nr-bridge, or nr-bridge-<ORG_ID> for a bridge scoped to one org, so that
// replicas of different scopes never share the partitions of one group
// (a replica scoped to globex would take partitions holding acme's
// commands and dead-letter them as out of scope).
func (s *Source) Group() string { return s.group }

// Start joins the group and starts reading in the background until Stop.
// It reads the dead-letter topic's size limit first (for at most 10 s; on
// failure KAFKA_MAX_MESSAGE_BYTES applies), and gives a derived scoped
// group that has no committed offsets yet those of the shared group
// nr-bridge (see seedGroup); it fails if that cannot be checked, rather
// than read the commands topic from the start.
func (s *Source) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return fmt.Errorf("start kafka commands source: %w", bridge.ErrClosed)
	}
	s.started = true
	if s.conn.Group != "" && s.orgID != "" && !strings.Contains(s.conn.Group, s.orgID) {
		s.log.Warn("KAFKA_GROUP is set with ORG_ID: replicas of other orgs in this group take this org's partitions and dead-letter its commands as out of scope; leave KAFKA_GROUP empty for a group per org",
			"group", s.group, "org", s.orgID)
	}
	admCl, err := kgo.NewClient(s.base...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	adm := kadm.NewClient(admCl)
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := s.dlq.Load(lctx, adm, s.conn.DLQTopic); err != nil {
		s.log.Warn("dead-letter topic size limit unknown, using KAFKA_MAX_MESSAGE_BYTES", "err", err)
	}
	cancel()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = s.seedGroup(sctx, adm)
	cancel()
	admCl.Close()
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(s.opts...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	s.cl = cl
	intake, stopIntake := context.WithCancel(context.WithoutCancel(ctx))
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	s.stopIntake, s.stopWork = stopIntake, stopWork
	go s.run(intake, work)
	s.log.Info("reading commands", "topic", s.conn.CommandsTopic, "group", s.group)
	return nil
}

// seedGroup gives the derived group of a scoped bridge (nr-bridge-<ORG_ID>,
// KAFKA_GROUP empty) that has no committed offsets on the commands topic
// the offsets of the shared group nr-bridge, the default before groups were
// derived from the scope: without them the new group would read the topic
// from the start after an upgrade, publishing again every command still
// within its TTL and dead-lettering the others as expired. Replicas that
// start at once seed the same offsets; harmless. Nothing is done for an
// explicit KAFKA_GROUP, for an unscoped bridge, or when nr-bridge has no
// offsets (a new deployment).
func (s *Source) seedGroup(ctx context.Context, adm *kadm.Client) error {
	if s.conn.Group != "" || s.group == kafkaconn.DefaultGroup {
		return nil
	}
	topic := s.conn.CommandsTopic
	// fetch reads group's committed offsets on topic; a group that does
	// not exist has none.
	fetch := func(group string) (kadm.Offsets, error) {
		resps, err := adm.FetchOffsetsForTopics(ctx, group, topic)
		if err == nil {
			err = resps.Error()
		}
		if errors.Is(err, kerr.GroupIDNotFound) {
			return kadm.Offsets{}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read the offsets of consumer group %s: %w", group, err)
		}
		return resps.Offsets(), nil
	}
	own, err := fetch(s.group)
	if err != nil {
		return err
	}
	committed := false
	own.Each(func(o kadm.Offset) { committed = committed || o.At >= 0 })
	if committed {
		return nil
	}
	offs, err := fetch(kafkaconn.DefaultGroup)
	if err != nil {
		return fmt.Errorf("start consumer group %s: %w", s.group, err)
	}
	offs.KeepFunc(func(o kadm.Offset) bool { return o.Topic == topic && o.At >= 0 })
	if len(offs[topic]) == 0 {
		return nil
	}
	resp, err := adm.CommitOffsets(ctx, s.group, offs)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("start consumer group %s from the offsets of %s: %w", s.group, kafkaconn.DefaultGroup, err)
	}
	s.log.Info("consumer group starts from the offsets of the shared group", "group", s.group,
		"from_group", kafkaconn.DefaultGroup, "partitions", len(offs[topic]))
	return nil
}

// run is the poll loop: one round per poll, then a backoff when a round
// left records to retry.
func (s *Source) run(intake, work context.Context) {
	defer close(s.done)
	backoff := backoff.Exponential(retryMin, retryMax)
	attempt := 0
	var lastRepair time.Time
	for intake.Err() == nil {
		fetches := s.cl.PollRecords(intake, s.cfg.PollRecords)
		if fetches.IsClientClosed() || intake.Err() != nil {
			// Records polled but not processed are not committed: the
			// partition's next reader starts from the last commit.
			s.cl.AllowRebalance()
			return
		}
		fetchFailed, topicMissing, recreated := false, false, false
		fetches.EachError(func(topic string, partition int32, err error) {
			fetchFailed = true
			topicMissing = topicMissing || kafkaconn.TopicMissing(err)
			recreated = recreated || errors.Is(err, kerr.UnknownTopicID)
			s.log.Warn("fetching commands failed", "topic", topic, "partition", partition, "err", err)
		})
		retry, err := s.round(intake, work, fetches)
		s.cl.AllowRebalance()
		if topicMissing && time.Since(lastRepair) > repairInterval {
			lastRepair = time.Now()
			s.repairTopics(intake, recreated)
		}
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

// repairInterval is how often at most the source recreates the commands
// topic while fetches say it does not exist.
const repairInterval = 2 * time.Second

// repairTopics recreates the commands and dead-letter topics after the
// cluster lost them (kafkaconn.Repair, with the same EnsureTopics as at
// start) and restarts consuming the commands topic, so that commands
// written to the recreated topic are read without a restart.
func (s *Source) repairTopics(ctx context.Context, recreated bool) {
	ctx, cancel := context.WithTimeout(ctx, repairInterval)
	defer cancel()
	ensure := func(ctx context.Context) error {
		return kafkaconn.EnsureTopics(ctx, kadm.NewClient(s.cl), s.conn) // not closed: that would close s.cl
	}
	purged, err := kafkaconn.Repair(ctx, s.cl, ensure, recreated, []string{s.conn.CommandsTopic}, []string{s.conn.DLQTopic})
	switch {
	case err != nil:
		s.log.Error("commands topic missing and not recreated; commands wait", "err", err)
	case len(purged) > 0:
		s.log.Warn("topics were missing (the cluster lost its state, or they were deleted): recreated, reading commands again", "topics", purged)
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
	started, stopped, cl := s.started, s.stopped, s.cl
	s.started, s.stopped = true, true // a later Start fails
	s.mu.Unlock()
	if stopped {
		return nil
	}
	if !started || cl == nil { // not started, or Start failed
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
	if s.instanceID != "" {
		// A static member's LeaveGroup above only stops the group
		// management; leave by instance ID, so that a stop (not a crash)
		// still hands the partitions over at once.
		resps, lerr := kadm.NewClient(s.cl).LeaveGroup(lctx, kadm.LeaveGroup(s.group).InstanceIDs(s.instanceID))
		if lerr == nil {
			lerr = resps.Error()
		}
		if lerr != nil {
			s.log.Warn("leaving the consumer group failed; the partitions move after the session timeout", "instance_id", s.instanceID, "err", lerr)
		}
	}
	cancel()
	s.cl.CloseAllowingRebalance()
	s.cancelProduce()
	s.log.Info("stopped reading commands")
	return err
}
