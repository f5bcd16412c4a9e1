package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
)

// Dead-letter header names specific to Kafka commands (docs/contract.md): where
// the rejected record came from. Nr-Error (bridge.HeaderError) carries the
// reason.
const (
	HeaderSourceTopic     = "Nr-Source-Topic"
	HeaderSourcePartition = "Nr-Source-Partition"
	HeaderSourceOffset    = "Nr-Source-Offset"
	HeaderSourceKey       = "Nr-Source-Key"
	// HeaderSourceKeySize is set on a dead letter whose record key was
	// cut (keys longer than maxDeadLetterKey): the length of the original
	// key, which Nr-Source-Key may hold only in part.
	HeaderSourceKeySize = "Nr-Source-Key-Size"
	// HeaderOriginalSize is set on a dead letter whose value was cut to
	// fit the dead-letter topic; it holds the original length.
	HeaderOriginalSize = bridge.HeaderOriginalSize
)

// handle finishes one record: it publishes the command, skips another org's
// command in a scoped group (see ownOrgOnly), or dead-letters a record that
// can never be published (bad key, not a valid command, expired, outside
// ORG_ID with a shared KAFKA_GROUP, refused by the broker for good). It returns nil
// once the record is finished and may be committed, else why it must be
// tried again.
func (s *Source) handle(ctx context.Context, r *kgo.Record) error {
	t, err := bridge.ParseCommandKey(string(r.Key))
	if err == nil && s.ownOrgOnly() && t.Org != s.orgID {
		// Another org's command: its own group publishes it.
		return nil
	}
	var c bridge.Command
	if err != nil {
		err = s.in.Refuse(bridge.SourceStream, err)
	} else {
		c, _, err = s.in.Submit(ctx, bridge.SourceStream, t, r.Value)
		if err == nil {
			if s.log.Enabled(ctx, slog.LevelDebug) {
				s.log.Debug("command published", "topic", t.MQTTTopic(), "correlation_id", c.CorrelationID,
					"partition", r.Partition, "offset", r.Offset)
			}
			return nil
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("command at %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, ctx.Err())
	}
	if bridge.Retryable(err) {
		// Retried until it succeeds or the TTL runs out: Submit then
		// fails with ErrExpired and the command is dead-lettered.
		return err
	}
	return s.deadLetter(ctx, r, err)
}

// ownOrgOnly reports whether the source leaves other orgs' commands to
// other groups: a scoped bridge in its derived group (KAFKA_GROUP empty),
// where every scope reads the whole topic in a group of its own. It skips
// (commits without publishing or dead-lettering) a command whose key names
// another org, which the replicas of that org read in theirs. With a
// KAFKA_GROUP set, groups may be shared across scopes, and such a command
// is dead-lettered as out of scope as before, so that it is not lost.
func (s *Source) ownOrgOnly() bool { return s.orgID != "" && s.conn.Group == "" }

// maxDeadLetterKey bounds the key of a command dead letter. A command's key
// is its target; one longer than this is not a valid target anyway (IDs
// are at most 64 characters), and copying a huge key (issue 18: 600,000
// bytes) would make the dead letter larger than the topic takes. The full
// length is then in Nr-Source-Key-Size, the key itself in Nr-Source-Key as
// far as FitDeadLetter leaves it.
const maxDeadLetterKey = 256

// deadLetter writes r to the dead-letter topic with the reason and its
// origin, and waits for Kafka's acknowledgement: only then may r's offset be
// committed. The dead letter always fits the topic's limit (see
// deadLetterRecord); if Kafka still refuses it for good
// (kafkaconn.Permanent: the topic's max.message.bytes was lowered after
// Start, say) it is cut to its minimum, the reason and the origin without
// the value, and written again. A failure is returned, and the record is
// tried again after a backoff: a transient one until Kafka takes it, one
// where even the minimum is refused for good until an operator fixes the
// topic (logged as an ERROR).
func (s *Source) deadLetter(ctx context.Context, r *kgo.Record, reason error) error {
	headers := deadLetterHeaders(r, reason)
	key := r.Key[:min(len(r.Key), maxDeadLetterKey)]
	dl := s.deadLetterRecord(key, headers, r.Value, s.dlq.MaxDeadLetterValue(s.conn.DLQTopic, len(key)))
	err := s.produce(ctx, dl)
	if err != nil && kafkaconn.Permanent(err) {
		s.log.Warn("dead letter refused; writing it again cut to the reason and the origin", "kafka_topic", r.Topic,
			"partition", r.Partition, "offset", r.Offset, "size", len(dl.Value), "err", err)
		dl = s.deadLetterRecord(key, headers, r.Value, 0)
		err = s.produce(ctx, dl)
		if err != nil && kafkaconn.Permanent(err) {
			s.log.Error("dead letter refused even without value; the command is tried again", "kafka_topic", r.Topic,
				"partition", r.Partition, "offset", r.Offset, "dlq_topic", dl.Topic, "err", err)
		}
	}
	if err != nil {
		return fmt.Errorf("dead-letter command at %s/%d@%d to %s: %w", r.Topic, r.Partition, r.Offset, dl.Topic, err)
	}
	s.in.DeadLettered(reason)
	s.log.Warn("command dead-lettered", "kafka_topic", r.Topic, "partition", r.Partition, "offset", r.Offset,
		"key", string(key), "err", bridge.ReasonLine(reason))
	return nil
}

// produce writes one dead letter and waits for Kafka's acknowledgement or
// the end of ctx.
func (s *Source) produce(ctx context.Context, dl *kgo.Record) error {
	res := make(chan error, 1)
	s.cl.Produce(s.produceCtx, dl, func(_ *kgo.Record, err error) { res <- err })
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// deadLetterHeaders are the headers of r's dead letter before any cut: r's
// own headers except reserved Nr- ones (a producer cannot forge the
// reason or the origin), then Nr-Error and the Nr-Source-* headers, with
// Nr-Source-Key-Size when the key is longer than maxDeadLetterKey.
func deadLetterHeaders(r *kgo.Record, reason error) []bridge.Header {
	hs := make([]bridge.Header, 0, len(r.Headers)+6)
	for _, h := range r.Headers {
		if len(h.Key) >= 3 && strings.EqualFold(h.Key[:3], "nr-") {
			continue
		}
		hs = append(hs, bridge.Header{Name: h.Key, Value: string(h.Value)})
	}
	hs = append(hs,
		bridge.Header{Name: bridge.HeaderReason, Value: bridge.ReasonOf(reason)},
		bridge.Header{Name: bridge.HeaderError, Value: bridge.ReasonLine(reason)},
		bridge.Header{Name: HeaderSourceTopic, Value: r.Topic},
		bridge.Header{Name: HeaderSourcePartition, Value: strconv.FormatInt(int64(r.Partition), 10)},
		bridge.Header{Name: HeaderSourceOffset, Value: strconv.FormatInt(r.Offset, 10)},
		bridge.Header{Name: HeaderSourceKey, Value: string(r.Key)},
	)
	if len(r.Key) > maxDeadLetterKey {
		hs = append(hs, bridge.Header{Name: HeaderSourceKeySize, Value: strconv.Itoa(len(r.Key))})
	}
	return hs
}

// deadLetterRecord is a dead letter with key, and headers and value cut by
// bridge.FitDeadLetter to limit bytes (the record's own headers dropped
// first, then the value cut with Nr-Original-Size, then the Nr- values
// shortened); limit 0 makes the smallest dead letter, no value and no
// headers but the bridge's own.
func (s *Source) deadLetterRecord(key []byte, headers []bridge.Header, value []byte, limit int) *kgo.Record {
	hs, v := bridge.FitDeadLetter(headers, value, limit)
	return &kgo.Record{Topic: s.conn.DLQTopic, Key: key, Value: v, Headers: kafkaconn.Headers(hs)}
}
