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
// hand), asks for a repair. It never blocks.
func (s *Sink) observe(err error) {
	s.health.Observe(err)
	if !kafkaconn.TopicMissing(err) {
		return
	}
	if errors.Is(err, kerr.UnknownTopicID) {
		s.recreated.Store(true) // exists under a new ID: purge even if listed
	}
	s.repairer.Ask()
}

// repair recreates missing topics (kafkaconn.EnsureTopics, the same as at
// start, so KAFKA_CREATE_TOPICS=false only reports them) through
// kafkaconn.Repair and reloads their size limits. It runs on the
// repairer's goroutine.
func (s *Sink) repair() {
	adm := kadm.NewClient(s.cl) // not closed: that would close s.cl
	ensure := func(ctx context.Context) error {
		if err := kafkaconn.EnsureTopics(ctx, adm, s.conn); err != nil {
			return err
		}
		return s.limits.Load(ctx, adm, s.conn.EventsTopic, s.conn.RepliesTopic, s.conn.DLQTopic)
	}
	ctx, cancel := context.WithTimeout(context.Background(), repairInterval)
	defer cancel()
	recreated := s.recreated.Swap(false)
	purged, err := kafkaconn.Repair(ctx, s.cl, ensure, recreated, nil,
		[]string{s.conn.EventsTopic, s.conn.RepliesTopic, s.conn.DLQTopic})
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
