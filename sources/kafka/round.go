package kafka

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/internal/backoff"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
)

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
