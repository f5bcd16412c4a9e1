package kafkaconn

import (
	"context"
	"errors"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TopicMissing reports whether err says a topic the client uses does not
// exist any more: UNKNOWN_TOPIC_OR_PARTITION (deleted, or a cluster that
// lost its state) or UNKNOWN_TOPIC_ID (recreated under a new ID, which
// franz-go does not adopt by itself).
func TopicMissing(err error) bool {
	return errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.UnknownTopicID)
}

// Repair makes cl use its topics again after the cluster lost them: it
// lists which of consumed and produced do not exist, runs ensure (the
// caller's own topic setup: EnsureTopics, or the status store's compacted
// topic), and purges from cl the topics that were missing, or all of them
// when recreated is set (an UNKNOWN_TOPIC_ID was seen: the topic exists
// under a new ID). Purging is the only way franz-go adopts a recreated
// topic: it fails what is buffered for the topic (callers write it again)
// and, for consumed topics, restarts consuming them (from the committed
// offsets, or the start of an empty topic). It returns the topics that
// were purged. Callers limit how often they call it.
func Repair(ctx context.Context, cl *kgo.Client, ensure func(context.Context) error, recreated bool, consumed, produced []string) ([]string, error) {
	all := append(slices.Clone(consumed), produced...)
	purge := all
	if !recreated {
		purge = nil
		details, err := kadm.NewClient(cl).ListTopics(ctx, all...) // not closed: that would close cl
		if err != nil {
			return nil, err
		}
		for _, t := range all {
			if d, ok := details[t]; !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
				purge = append(purge, t)
			}
		}
	}
	if err := ensure(ctx); err != nil {
		return nil, err
	}
	var c, p []string
	for _, t := range purge {
		if slices.Contains(consumed, t) {
			c = append(c, t)
		} else {
			p = append(p, t)
		}
	}
	if len(p) > 0 {
		cl.PurgeTopicsFromProducing(p...)
	}
	if len(c) > 0 {
		cl.PurgeTopicsFromClient(c...)
		cl.AddConsumeTopics(c...)
	}
	return purge, nil
}
