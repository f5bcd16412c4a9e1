package kafkastatus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
	"github.com/nr-bridge/nr-bridge/internal/ratelog"
)

// ensureTopic creates the status topic compacted (cleanup.policy
// compact,delete, retention.ms retention), or checks that it exists, by
// the rules of every topic of the bridge (kafkaconn.EnsureTopicsWith).
func ensureTopic(ctx context.Context, cl *kgo.Client, conn kafkaconn.Config, topic string, retention time.Duration, log *slog.Logger) error {
	if err := kafkaconn.WaitReachable(ctx, cl, log); err != nil {
		return err
	}
	retentionMS := strconv.FormatInt(retention.Milliseconds(), 10)
	compact := "compact,delete"
	configs := map[string]*string{"cleanup.policy": &compact, "retention.ms": &retentionMS}
	if err := kafkaconn.EnsureTopicsWith(ctx, kadm.NewClient(cl), conn, configs, topic); err != nil {
		return fmt.Errorf("status topic (KAFKA_STATUS_TOPIC, compacted, retention.ms %s): %w", retentionMS, err)
	}
	return nil
}

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
	warn, lastRepair := ratelog.New(5*time.Second), time.Time{}
	for {
		fetches := s.cl.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		missing, recreated := false, false
		fetches.EachError(func(topic string, p int32, err error) {
			missing = missing || kafkaconn.TopicMissing(err)
			recreated = recreated || errors.Is(err, kerr.UnknownTopicID)
			if warn.Allow() {
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
