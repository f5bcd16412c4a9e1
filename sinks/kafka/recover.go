package kafka

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
)

// repairInterval is how often at most the sink checks and recreates its
// topics while produces fail because a topic does not exist.
const repairInterval = 2 * time.Second

// observe records a produce outcome for Ready and, when the cluster says a
// topic does not exist (a cluster that lost its state, a topic deleted by
// hand), asks the repair loop to recreate the topics. It never blocks.
func (s *Sink) observe(err error) {
	s.health.Observe(err)
	if !kafkaconn.TopicMissing(err) {
		return
	}
	if errors.Is(err, kerr.UnknownTopicID) {
		s.recreated.Store(true) // exists under a new ID: purge even if listed
	}
	select {
	case s.repair <- struct{}{}:
	default: // a repair is already asked for
	}
}

// repairLoop recreates missing topics (kafkaconn.EnsureTopics, the same
// as at start, so KAFKA_CREATE_TOPICS=false only reports them) through
// kafkaconn.Repair and reloads their size limits, at most once per
// repairInterval, until Close.
func (s *Sink) repairLoop() {
	defer close(s.repairDone)
	adm := kadm.NewClient(s.cl) // not closed: that would close s.cl
	ensure := func(ctx context.Context) error {
		if err := kafkaconn.EnsureTopics(ctx, adm, s.conn); err != nil {
			return err
		}
		return s.limits.Load(ctx, adm, s.conn.EventsTopic, s.conn.RepliesTopic, s.conn.DLQTopic)
	}
	var last time.Time
	for {
		select {
		case <-s.repair:
		case <-s.stopRepair:
			return
		}
		if wait := time.Until(last.Add(repairInterval)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-s.stopRepair:
				return
			}
		}
		last = time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), repairInterval)
		recreated := s.recreated.Swap(false)
		purged, err := kafkaconn.Repair(ctx, s.cl, ensure, recreated, nil,
			[]string{s.conn.EventsTopic, s.conn.RepliesTopic, s.conn.DLQTopic})
		cancel()
		switch {
		case err != nil:
			if recreated {
				s.recreated.Store(true) // still to purge once the topics exist
			}
			s.log.Error("topics missing and not recreated; writes wait", "err", err)
		case len(purged) > 0:
			s.log.Warn("topics were missing (the cluster lost its state, or they were deleted): recreated", "topics", purged)
		}
	}
}
