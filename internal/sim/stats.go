package sim

import "sync/atomic"

// stats are the run's counters, shared by every connection; all fields are
// safe for concurrent use.
type stats struct {
	sent     atomic.Uint64 // events published (QoS 0) or answered by the broker (QoS 1)
	acked    atomic.Uint64 // QoS 1 events with a successful PUBACK
	failed   atomic.Uint64 // events whose publish failed (timeout, refusal, connection lost after sending)
	inflight atomic.Int64  // publishes waiting for their PUBACK

	commands    atomic.Uint64 // commands received, counted once per target node
	replies     atomic.Uint64 // replies published (acknowledged at QoS 1)
	replyErrors atomic.Uint64 // replies that could not be published

	latency histogram // publish call to PUBACK, QoS 1 only
}
