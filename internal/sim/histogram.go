package sim

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram layout: values below 2^subBits nanoseconds have a bucket each;
// above, every power of two is split into 2^subBits buckets, so a recorded
// value is off by at most 1/2^subBits (3%) of itself.
const (
	subBits    = 5
	subBuckets = 1 << subBits
	numBuckets = (64 - subBits + 1) * subBuckets
)

// histogram counts durations in log-linear buckets. Record is lock-free and
// safe for concurrent use; it costs two atomic adds.
type histogram struct {
	counts [numBuckets]atomic.Uint64
	max    atomic.Int64
}

func bucketOf(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < subBuckets {
		return int(v)
	}
	k := bits.Len64(v) - 1 // v in [2^k, 2^(k+1)), k >= subBits
	sub := int(v>>(k-subBits)) & (subBuckets - 1)
	return (k-subBits+1)*subBuckets + sub
}

// bucketUpper is the largest value that falls in bucket i.
func bucketUpper(i int) time.Duration {
	if i < subBuckets {
		return time.Duration(i)
	}
	k := i/subBuckets + subBits - 1
	sub := uint64(i % subBuckets)
	lower := (subBuckets + sub) << (k - subBits)
	return time.Duration(lower + (1 << (k - subBits)) - 1)
}

// Record adds one duration.
func (h *histogram) Record(d time.Duration) {
	h.counts[bucketOf(d)].Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// snapshot is a copy of a histogram's counts at one moment.
type snapshot struct {
	counts [numBuckets]uint64
	total  uint64
	max    time.Duration
}

func (h *histogram) snapshot() *snapshot {
	s := &snapshot{max: time.Duration(h.max.Load())}
	for i := range s.counts {
		s.counts[i] = h.counts[i].Load()
		s.total += s.counts[i]
	}
	return s
}

// since returns the counts recorded after prev (max is the overall max).
func (s *snapshot) since(prev *snapshot) *snapshot {
	d := &snapshot{max: s.max}
	for i := range s.counts {
		d.counts[i] = s.counts[i] - prev.counts[i]
		d.total += d.counts[i]
	}
	return d
}

// quantile returns the upper bound of the bucket holding the q-quantile
// (0 < q <= 1), never above the recorded maximum; 0 when empty.
func (s *snapshot) quantile(q float64) time.Duration {
	if s.total == 0 {
		return 0
	}
	rank := uint64(q*float64(s.total) + 0.999999)
	rank = min(max(rank, 1), s.total)
	var seen uint64
	for i, n := range s.counts {
		seen += n
		if seen >= rank {
			return min(bucketUpper(i), s.max)
		}
	}
	return s.max
}

// Latency summarizes publish latencies (publish call to PUBACK).
type Latency struct {
	Count                    uint64
	P50, P90, P99, P999, Max time.Duration
}

func (s *snapshot) latency() Latency {
	return Latency{
		Count: s.total,
		P50:   s.quantile(0.50),
		P90:   s.quantile(0.90),
		P99:   s.quantile(0.99),
		P999:  s.quantile(0.999),
		Max:   s.max,
	}
}
