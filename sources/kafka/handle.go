package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// Dead-letter header names specific to Kafka commands (DESIGN.md): where
// the rejected record came from. Nr-Error (bridge.HeaderError) carries the
// reason.
const (
	HeaderSourceTopic     = "Nr-Source-Topic"
	HeaderSourcePartition = "Nr-Source-Partition"
	HeaderSourceOffset    = "Nr-Source-Offset"
	HeaderSourceKey       = "Nr-Source-Key"
	// HeaderOriginalSize is set on a dead letter whose value was cut to
	// fit the dead-letter topic; it holds the original length.
	HeaderOriginalSize = "Nr-Original-Size"
)

// handle finishes one record: it publishes the command, or dead-letters a
// record that can never be published (bad key, not a valid command,
// expired, outside ORG_ID, refused by the broker for good). It returns nil
// once the record is finished and may be committed, else why it must be
// tried again.
func (s *Source) handle(ctx context.Context, r *kgo.Record) error {
	t, err := bridge.ParseCommandKey(string(r.Key))
	var c bridge.Command
	if err == nil {
		c, err = bridge.ParseCommand(r.Value, time.Now(), s.limits)
	}
	if err != nil {
		s.pub.Refused(bridge.SourceStream, err)
	} else {
		_, err = s.pub.Publish(ctx, t, c, bridge.SourceStream)
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
		// Retried until it succeeds or the TTL runs out: ParseCommand
		// then fails with ErrExpired and the command is dead-lettered.
		return err
	}
	return s.deadLetter(ctx, r, err)
}

// deadLetter writes r to the dead-letter topic with the reason and its
// origin, and waits for Kafka's acknowledgement: only then may r's offset be
// committed.
func (s *Source) deadLetter(ctx context.Context, r *kgo.Record, reason error) error {
	dl := s.deadLetterRecord(r, reason)
	res := make(chan error, 1)
	s.cl.Produce(s.produceCtx, dl, func(_ *kgo.Record, err error) { res <- err })
	select {
	case err := <-res:
		if err != nil {
			return fmt.Errorf("dead-letter command at %s/%d@%d to %s: %w", r.Topic, r.Partition, r.Offset, dl.Topic, err)
		}
	case <-ctx.Done():
		return fmt.Errorf("dead-letter command at %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, ctx.Err())
	}
	s.pub.DeadLettered(reason)
	s.log.Warn("command dead-lettered", "kafka_topic", r.Topic, "partition", r.Partition, "offset", r.Offset,
		"key", string(r.Key), "reason", oneLine(reason.Error()))
	return nil
}

// deadLetterRecord is r's dead letter: same key and value (cut to fit the
// dead-letter topic, with Nr-Original-Size), r's own headers except
// reserved Nr- ones, then Nr-Error and the Nr-Source-* headers.
func (s *Source) deadLetterRecord(r *kgo.Record, reason error) *kgo.Record {
	dl := &kgo.Record{Topic: s.conn.DLQTopic, Key: r.Key, Value: r.Value}
	for _, h := range r.Headers {
		if len(h.Key) >= 3 && strings.EqualFold(h.Key[:3], "nr-") {
			continue
		}
		dl.Headers = append(dl.Headers, h)
	}
	add := func(k, v string) { dl.Headers = append(dl.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)}) }
	add(bridge.HeaderError, oneLine(reason.Error()))
	add(HeaderSourceTopic, r.Topic)
	add(HeaderSourcePartition, strconv.FormatInt(int64(r.Partition), 10))
	add(HeaderSourceOffset, strconv.FormatInt(r.Offset, 10))
	dl.Headers = append(dl.Headers, kgo.RecordHeader{Key: HeaderSourceKey, Value: r.Key})

	size := len(dl.Key)
	for _, h := range dl.Headers {
		size += len(h.Key) + len(h.Value) + 8
	}
	if limit := s.dlq.MaxDeadLetterValue(dl.Topic, size+64); len(dl.Value) > limit {
		add(HeaderOriginalSize, strconv.Itoa(len(r.Value)))
		dl.Value = dl.Value[:limit]
	}
	return dl
}

// oneLine keeps a reason to one line of bounded length for a header: no
// CR, LF or other control characters.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 1024 {
		s = strings.ToValidUTF8(s[:1024], "")
	}
	return s
}
