package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
)

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
