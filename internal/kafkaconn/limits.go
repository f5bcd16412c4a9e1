package kafkaconn

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kadm"
)

// Limits is the largest record batch the bridge produces to each topic: the
// smaller of KAFKA_MAX_MESSAGE_BYTES and the topic's max.message.bytes.
// franz-go checks a record against it before sending, so a record that is
// too large fails alone, at once, with kerr.MessageTooLarge, instead of
// having the broker reject a whole batch of records that each fit. It is
// safe for concurrent use.
type Limits struct {
	def    int
	topics atomic.Pointer[map[string]int]
}

// NewLimits returns limits of cfg.MaxMessageBytes for every topic until
// Load reads the topics' own limits.
func NewLimits(cfg Config) *Limits {
	return &Limits{def: cfg.MaxMessageBytes}
}

// Load reads max.message.bytes of topics from the cluster. A topic whose
// configuration cannot be read (no DescribeConfigs permission) keeps
// KAFKA_MAX_MESSAGE_BYTES; the error says which. Call it before the first
// record is produced: franz-go reads a topic's limit once, when it first
// produces to the topic.
func (l *Limits) Load(ctx context.Context, adm *kadm.Client, topics ...string) error {
	m := make(map[string]int, len(topics))
	rcs, err := adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return fmt.Errorf("describe configs of topics %s: %w", strings.Join(topics, ", "), err)
	}
	for _, rc := range rcs {
		if rc.Err != nil {
			return fmt.Errorf("describe configs of topic %s: %w", rc.Name, rc.Err)
		}
		for _, c := range rc.Configs {
			if c.Key != "max.message.bytes" || c.Value == nil {
				continue
			}
			if v, err := strconv.Atoi(*c.Value); err == nil && v > 0 {
				m[rc.Name] = v
			}
		}
	}
	l.topics.Store(&m)
	return nil
}

// MaxBytes is the largest record batch the bridge produces to topic, for
// kgo.ProducerBatchMaxBytesFn; at least 512, franz-go's minimum.
func (l *Limits) MaxBytes(topic string) int32 {
	v := l.def
	if m := l.topics.Load(); m != nil {
		if t, ok := (*m)[topic]; ok && t < v {
			v = t
		}
	}
	return int32(max(v, 512))
}

// MaxDeadLetterValue is how many bytes of a payload a dead letter to topic
// keeps, given the size of its key and headers: MaxBytes minus those and a
// margin for the record and batch framing.
func (l *Limits) MaxDeadLetterValue(topic string, keyAndHeaders int) int {
	margin := min(DeadLetterMargin, int(l.MaxBytes(topic))/4)
	return max(int(l.MaxBytes(topic))-margin-keyAndHeaders, 0)
}

// MaxDeadLetter is how many bytes of headers and value a dead letter to
// topic may have, given the length of its key: MaxBytes minus the key and
// a margin for the record and batch framing (DeadLetterMargin, or a quarter
// of a small limit). The sinks cut dead letters to it with
// bridge.FitDeadLetter.
func (l *Limits) MaxDeadLetter(topic string, keyLen int) int {
	margin := min(DeadLetterMargin, int(l.MaxBytes(topic))/4)
	return max(int(l.MaxBytes(topic))-margin-keyLen, 0)
}
