package dlqtail

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
)

// Kafka reads the dead-letter topic (KAFKA_DLQ_TOPIC, nr.dlq). Each call
// uses a client of its own, closed before it returns: the reader holds no
// connection or goroutine between calls. It is safe for concurrent use.
type Kafka struct {
	conn kafkaconn.Config
	log  *slog.Logger
	scan int
}

// NewKafka returns the reader of conn.DLQTopic. It reads the newest
// DefaultScan dead letters of each partition at most per call.
func NewKafka(conn kafkaconn.Config, log *slog.Logger) *Kafka {
	return &Kafka{conn: conn, log: log.With("component", "dlqtail", "backbone", "kafka"), scan: DefaultScan}
}

// Recent returns up to limit (at most MaxLimit) of org's most recent dead
// letters, newest first by record time, from the newest DefaultScan
// records of each partition. An empty topic is no error.
func (r *Kafka) Recent(ctx context.Context, org string, limit int) ([]Entry, error) {
	ctx, cancel, limit, err := bounds(ctx, org, limit)
	defer cancel()
	if err != nil || limit == 0 {
		return nil, err
	}
	opts, err := kafkaconn.Options(r.conn, r.log)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("dead letters: kafka client: %w", err)
	}
	defer cl.Close()
	topic := r.conn.DLQTopic
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("dead letters: end offsets of %s: %w", topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("dead letters: start offsets of %s: %w", topic, err)
	}
	from := map[int32]kgo.Offset{}
	left := map[int32]int64{} // partition -> end offset still to reach
	ends.Each(func(o kadm.ListedOffset) {
		start := max(o.Offset-int64(r.scan), 0)
		if s, ok := starts.Lookup(topic, o.Partition); ok {
			start = max(start, s.Offset)
		}
		if start < o.Offset {
			from[o.Partition] = kgo.NewOffset().At(start)
			left[o.Partition] = o.Offset
		}
	})
	if len(from) == 0 {
		return nil, nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: from})
	var out []Entry
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("dead letters: read %s: %w", topic, err)
		}
		fs.EachError(func(_ string, p int32, err error) {
			r.log.Debug("dead-letter topic fetch error", "partition", p, "err", err)
		})
		fs.EachRecord(func(rec *kgo.Record) {
			if end, ok := left[rec.Partition]; ok && rec.Offset+1 >= end {
				delete(left, rec.Partition)
			}
			get := func(name string) string {
				for _, h := range rec.Headers {
					if h.Key == name {
						return string(h.Value)
					}
				}
				return ""
			}
			e := entryOf(get, len(rec.Value), "")
			if e.Org != org {
				return
			}
			e.Time = rec.Timestamp.UTC()
			e.Position = strconv.Itoa(int(rec.Partition)) + "/" + strconv.FormatInt(rec.Offset, 10)
			out = append(out, e)
		})
	}
	slices.SortStableFunc(out, func(a, b Entry) int { return b.Time.Compare(a.Time) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
