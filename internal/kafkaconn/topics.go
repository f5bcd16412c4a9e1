package kafkaconn

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// EnsureTopics makes sure every topic of cfg exists. With CreateTopics it
// creates the missing ones with TopicPartitions partitions and
// ReplicationFactor replicas (a topic created meanwhile by someone else is
// fine); without it, a missing topic is an error. The error names each
// topic the cluster refused and why (authorization, replication factor
// larger than the cluster, ...), so an operator can create the topics by
// hand or fix the settings. It makes one attempt: call it once the cluster
// is reachable (WaitReachable).
func EnsureTopics(ctx context.Context, adm *kadm.Client, cfg Config) error {
	return EnsureTopicsWith(ctx, adm, cfg, nil, cfg.Topics()...)
}

// EnsureTopicsWith is EnsureTopics for the given topics, created with the
// topic configs (cleanup.policy, retention.ms ...; nil: the broker's
// defaults): the status store's compacted topic is set up by the same
// rules as the bridge's other topics.
func EnsureTopicsWith(ctx context.Context, adm *kadm.Client, cfg Config, configs map[string]*string, topics ...string) error {
	details, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		return fmt.Errorf("describe topics %s: %w", strings.Join(topics, ", "), err)
	}
	var missing []string
	for _, t := range topics {
		d, ok := details[t]
		switch {
		case ok && d.Err == nil:
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			missing = append(missing, t)
		default:
			return fmt.Errorf("describe topic %s: %w", t, d.Err)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if !cfg.CreateTopics {
		return fmt.Errorf("topics %s do not exist and KAFKA_CREATE_TOPICS=false: create them or set KAFKA_CREATE_TOPICS=true", strings.Join(missing, ", "))
	}
	resps, err := adm.CreateTopics(ctx, cfg.TopicPartitions, cfg.ReplicationFactor, configs, missing...)
	if err != nil {
		return fmt.Errorf("create topics %s: %w", strings.Join(missing, ", "), err)
	}
	var errs []error
	for _, t := range missing {
		r, ok := resps[t]
		if !ok {
			errs = append(errs, fmt.Errorf("create topic %s: no answer from the cluster", t))
			continue
		}
		if r.Err == nil || errors.Is(r.Err, kerr.TopicAlreadyExists) {
			continue
		}
		msg := ""
		if r.ErrMessage != "" {
			msg = " (" + r.ErrMessage + ")"
		}
		errs = append(errs, fmt.Errorf("create topic %s with %d partitions and replication factor %d (KAFKA_TOPIC_PARTITIONS, KAFKA_REPLICATION_FACTOR; -1 = broker default): %w%s",
			t, cfg.TopicPartitions, cfg.ReplicationFactor, r.Err, msg))
	}
	if len(errs) > 0 {
		errs = append(errs, errors.New("create the topics yourself and set KAFKA_CREATE_TOPICS=false, or fix the settings"))
		return errors.Join(errs...)
	}
	return nil
}
