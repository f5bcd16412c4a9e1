// Package backoff is the one retry delay of the bridge: every reconnect and
// retry loop (MQTT connections, backbone writes, commands sources, status
// stores) waits with it, so they all back off alike.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Exponential returns a delay for attempt n (0-based): min doubled per
// attempt up to max, with up to 20% jitter, and never zero. autopaho's own
// backoffs return 0 for the first attempt after a dropped connection, which
// turns a broker that accepts and then kicks a client into a reconnect storm.
func Exponential(min, max time.Duration) func(attempt int) time.Duration {
	return func(attempt int) time.Duration {
		d := min
		for i := 0; i < attempt && d < max; i++ {
			d *= 2
		}
		if d > max {
			d = max
		}
		d += time.Duration(rand.Int64N(int64(d)/5 + 1))
		return d
	}
}
