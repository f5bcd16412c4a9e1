package tracker

import (
	"fmt"
	"time"
)

// Config configures command tracking. Defaults are in the
// envDefault tags.
type Config struct {
	// Grace is how long a command's status stays readable after its TTL
	// ran out. Stores keep statuses COMMAND_MAX_TTL + Grace (see
	// Retention): a NATS KV bucket supports only one TTL for all keys on
	// servers before 2.11. Default 1h.
	Grace time.Duration `env:"COMMAND_STATUS_GRACE" envDefault:"1h" desc:"how long a command's status stays readable after its TTL; statuses are kept COMMAND_MAX_TTL + this"`
}

// Validate checks the values; errors name the variable.
func (c Config) Validate() error {
	if c.Grace < time.Minute {
		return fmt.Errorf("COMMAND_STATUS_GRACE must be at least 1m, got %s", c.Grace)
	}
	return nil
}

// Retention is how long a store keeps a status after its last change:
// the largest TTL a command may have plus Grace.
func (c Config) Retention(maxTTL time.Duration) time.Duration {
	return maxTTL + c.Grace
}

// Tracker bounds and timeouts. Status writes on the publish path are
// short, so a backbone outage delays a command by at most a second before
// it is published untracked.
const (
	acceptWriteTimeout = time.Second
	statusWriteTimeout = 5 * time.Second
	maxUpdateAttempts  = 16
	// replyQueueLen is how many reply status updates may wait for the
	// store; when it is full the update is dropped (WARN), never the
	// reply, and never blocking the worker that acknowledges it.
	replyQueueLen = 1024
	replyWorkers  = 4
	// maxPendingExpiries bounds the expiry timers one replica holds;
	// beyond it an expiry is only seen when the status is read (Refresh)
	// and not counted in the metrics.
	maxPendingExpiries = 100_000
)
