// Package natsjs writes node events and replies to NATS JetStream: one
// subject per node and kind, async publishing with a bounded window, and a
// message is reported written only after its PubAck. What it shares with
// the commands source and the status bucket (subject prefix, dead-letter
// stream, stream setup, error recognition) is in internal/natsconn.
package natsjs

import (
	"fmt"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/natsconn"
)

// Config is the JetStream side of the sink: the shared stream settings
// (natsconn.Streams) and the sink's own. Defaults are in the envDefault
// tags.
type Config struct {
	natsconn.Streams
	EventsStream  string        `env:"NATS_EVENTS_STREAM" envDefault:"NR_EVENTS" desc:"stream for events"`
	RepliesStream string        `env:"NATS_REPLIES_STREAM" envDefault:"NR_REPLIES" desc:"stream for command replies"`
	PublishWindow int           `env:"NATS_PUBLISH_WINDOW" envDefault:"4096" desc:"async publishes awaiting a PubAck at most"`
	AckTimeout    time.Duration `env:"NATS_ACK_TIMEOUT" envDefault:"5s" desc:"how long a publish waits for its PubAck before it is retried"`
	// UnhealthyAfter is how long every publish may fail before Ready (and
	// so /readyz and nr_bridge_backbone_connected) reports JetStream
	// unhealthy although the connection is up.
	UnhealthyAfter time.Duration `env:"NATS_UNHEALTHY_AFTER" envDefault:"15s" desc:"how long every publish may fail (e.g. a deleted stream) before /readyz reports NATS not ready"`
}

// DefaultUnhealthyAfter is NATS_UNHEALTHY_AFTER's default, also used by New
// for a Config that leaves it zero.
const DefaultUnhealthyAfter = 15 * time.Second

// Validate checks the values; errors name the variable.
func (c *Config) Validate() error {
	if err := c.Streams.Validate(); err != nil {
		return err
	}
	for _, s := range []struct{ name, v string }{{"NATS_EVENTS_STREAM", c.EventsStream}, {"NATS_REPLIES_STREAM", c.RepliesStream}} {
		if !natsconn.ValidName(s.v) {
			return fmt.Errorf("%s %q: stream names cannot be empty or contain spaces, . * > / \\", s.name, s.v)
		}
	}
	if c.PublishWindow < 1 || c.PublishWindow > 1<<20 {
		return fmt.Errorf("NATS_PUBLISH_WINDOW must be between 1 and 1048576, got %d", c.PublishWindow)
	}
	if c.AckTimeout <= 0 {
		return fmt.Errorf("NATS_ACK_TIMEOUT must be > 0, got %s", c.AckTimeout)
	}
	return nil
}
