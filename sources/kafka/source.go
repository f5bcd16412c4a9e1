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
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
)

// Intake is what the source calls: the bridge's one command intake
// (*bridge.Intake). The source decides between retrying and
// dead-lettering with bridge.Retryable.
type Intake interface {
	// Submit checks the target, parses raw and publishes the command,
	// returning once the broker acknowledged it; see bridge.Intake.Submit.
	Submit(ctx context.Context, source string, t bridge.Target, raw []byte) (bridge.Command, bridge.PublishResult, error)
	// Refuse counts a command refused before it could be submitted (a key
	// that is no target) and returns err.
	Refuse(source string, err error) error
	// DeadLettered counts a command written to the dead-letter topic
	// because of err.
	DeadLettered(err error)
	// OrgID is the bridge's scope, ORG_ID ("" when unscoped).
	OrgID() string
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
	in         Intake
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

// New returns a source reading conn.CommandsTopic as a member of the
// commands group (conn.CommandsGroup of the intake's ORG_ID, see Group)
// and submitting every command to in. instanceID is a name stable per
// replica and unique across replicas (the publisher's MQTT client ID,
// <MQTT_CLIENT_ID>-pub), which becomes the group instance ID (static
// membership); "" for none. It neither connects nor starts goroutines:
// Start does.
func New(conn kafkaconn.Config, cfg Config, in Intake, instanceID string, log *slog.Logger) (*Source, error) {
	orgID := in.OrgID()
	s := &Source{
		conn:       conn,
		cfg:        cfg,
		in:         in,
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

// Start joins the group and starts reading in the background until Close.
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

// Close stops reading: no new poll and no new record; records in progress
// are finished and committed until ctx ends, then abandoned (not committed,
// read again later). Then it leaves the group, so the partitions move to
// another member at once, and closes the client. Calling it again is a
// no-op.
func (s *Source) Close(ctx context.Context) error {
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
