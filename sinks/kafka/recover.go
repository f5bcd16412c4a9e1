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
	if errors.Is(err, kerr.UnknownTopicID) {
		// The topic exists under a new ID (recreated): franz-go keeps
		// failing it until it is purged from the client.
		s.recreated.Store(true)
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.UnknownTopicID) {
		select {
		case s.repair <- struct{}{}:
		default: // a repair is already asked for
		}
	}
}

// repairLoop recreates missing topics (kafkaconn.EnsureTopics, the same
// as at start, so KAFKA_CREATE_TOPICS=false only reports them) and reloads
// their size limits, at most once per repairInterval, until Close.
func (s *Sink) repairLoop() {
	defer close(s.repairDone)
	adm := kadm.NewClient(s.cl) // not closed: that would close s.cl
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
		missing := s.missingTopics(ctx, adm)
		err := kafkaconn.EnsureTopics(ctx, adm, s.conn)
		if err == nil {
			err = s.limits.Load(ctx, adm, s.conn.EventsTopic, s.conn.RepliesTopic, s.conn.DLQTopic)
		}
		cancel()
		if err != nil {
			s.log.Error("topics missing and not recreated; writes wait", "err", err)
			continue
		}
		if s.recreated.Swap(false) {
			missing = []string{s.conn.EventsTopic, s.conn.RepliesTopic, s.conn.DLQTopic}
		}
		if len(missing) > 0 {
			// A recreated topic has a new ID, which franz-go adopts only
			// once the topic is purged from the client; purging fails what
			// is buffered for it, and the workers write that again.
			s.cl.PurgeTopicsFromProducing(missing...)
			s.log.Warn("topics were missing (the cluster lost its state, or they were deleted): recreated", "topics", missing)
		}
	}
}

// missingTopics lists the sink's topics that the cluster does not have;
// nil when it cannot tell.
func (s *Sink) missingTopics(ctx context.Context, adm *kadm.Client) []string {
	topics := []string{s.conn.EventsTopic, s.conn.RepliesTopic, s.conn.DLQTopic}
	details, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		return nil
	}
	var missing []string
	for _, t := range topics {
		if d, ok := details[t]; !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			missing = append(missing, t)
		}
	}
	return missing
}
