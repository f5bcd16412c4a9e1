package dlqtail

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// natsMsgSize is the header a headers-only consumer sets to the size of
// the payload it left out.
const natsMsgSize = "Nats-Msg-Size"

// defaultTimeout bounds a Recent whose ctx has no deadline.
const defaultTimeout = 5 * time.Second

// NATS reads the dead-letter stream (NATS_DLQ_STREAM, NR_DLQ) of a
// JetStream connection. It is safe for concurrent use and holds no
// goroutines between calls.
type NATS struct {
	js     jetstream.JetStream
	stream string
	prefix string // NATS_SUBJECT_PREFIX, to read command subjects
	scan   int
}

// NewNATS returns the reader of stream (NATS_DLQ_STREAM) on js; prefix is
// NATS_SUBJECT_PREFIX. It reads the newest DefaultScan dead letters at
// most per call.
func NewNATS(js jetstream.JetStream, stream, prefix string) *NATS {
	return &NATS{js: js, stream: stream, prefix: prefix, scan: DefaultScan}
}

// Recent returns up to limit (at most MaxLimit) of org's most recent dead
// letters, newest first, from the newest DefaultScan of the stream. It
// reads headers only (an ordered consumer with headers_only: the payload
// never leaves the server) in one batch. An empty stream is no error.
func (r *NATS) Recent(ctx context.Context, org string, limit int) ([]Entry, error) {
	ctx, cancel, limit, err := bounds(ctx, org, limit)
	defer cancel()
	if err != nil || limit == 0 {
		return nil, err
	}
	s, err := r.js.Stream(ctx, r.stream)
	if err != nil {
		return nil, fmt.Errorf("dead letters: stream %s: %w", r.stream, err)
	}
	st := s.CachedInfo().State
	if st.Msgs == 0 {
		return nil, nil
	}
	start := st.FirstSeq
	if st.LastSeq-st.FirstSeq >= uint64(r.scan) {
		start = st.LastSeq - uint64(r.scan) + 1
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   start,
		HeadersOnly:   true,
	})
	if err != nil {
		return nil, fmt.Errorf("dead letters: read %s: %w", r.stream, err)
	}
	batch, err := cons.FetchNoWait(int(min(st.LastSeq-start+1, uint64(r.scan))))
	if err != nil {
		return nil, fmt.Errorf("dead letters: read %s: %w", r.stream, err)
	}
	var out []Entry
	for m := range batch.Messages() {
		meta, err := m.Metadata()
		if err != nil {
			continue
		}
		h := m.Headers()
		size, _ := strconv.Atoi(h.Get(natsMsgSize))
		e := entryOf(h.Get, size, r.prefix)
		if e.Org != org {
			continue
		}
		e.Time = meta.Timestamp.UTC()
		e.Position = strconv.FormatUint(meta.Sequence.Stream, 10)
		out = append(out, e)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
		return nil, fmt.Errorf("dead letters: read %s: %w", r.stream, err)
	}
	slices.Reverse(out)
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
