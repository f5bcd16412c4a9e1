// Package natsjs writes node events and replies to NATS JetStream: one
// subject per node and kind, async publishing with a bounded window, and a
// message is reported written only after its PubAck.
package natsjs

import (
	"fmt"
	"strings"
	"time"
)

// Config is the JetStream side of the sink. Defaults are in the envDefault
// tags.
type Config struct {
	SubjectPrefix   string        `env:"NATS_SUBJECT_PREFIX" envDefault:"nr" desc:"first token of every subject (nr.org.<org>.node.<node>.events)"`
	EventsStream    string        `env:"NATS_EVENTS_STREAM" envDefault:"NR_EVENTS" desc:"stream for events"`
	RepliesStream   string        `env:"NATS_REPLIES_STREAM" envDefault:"NR_REPLIES" desc:"stream for command replies"`
	DLQStream       string        `env:"NATS_DLQ_STREAM" envDefault:"NR_DLQ" desc:"stream for dead letters (<prefix>.dlq.>)"`
	ManageStreams   bool          `env:"NATS_MANAGE_STREAMS" envDefault:"true" desc:"create or update the streams at start; false = use them as the operator configured them (they must exist)"`
	Replicas        int           `env:"NATS_STREAM_REPLICAS" envDefault:"1" desc:"replicas of each managed stream (1 to 5)"`
	MaxAge          time.Duration `env:"NATS_STREAM_MAX_AGE" envDefault:"168h" desc:"how long managed streams keep messages (0 = forever)"`
	DuplicateWindow time.Duration `env:"NATS_DUPLICATE_WINDOW" envDefault:"10m" desc:"JetStream dedupe window for Nats-Msg-Id; should exceed the longest redelivery delay (MQTT_SESSION_EXPIRY)"`
	PublishWindow   int           `env:"NATS_PUBLISH_WINDOW" envDefault:"4096" desc:"async publishes awaiting a PubAck at most"`
	AckTimeout      time.Duration `env:"NATS_ACK_TIMEOUT" envDefault:"5s" desc:"how long a publish waits for its PubAck before it is retried"`
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
	if c.SubjectPrefix == "" || strings.ContainsAny(c.SubjectPrefix, " \t\r\n*>") || strings.HasPrefix(c.SubjectPrefix, ".") || strings.HasSuffix(c.SubjectPrefix, ".") {
		return fmt.Errorf("NATS_SUBJECT_PREFIX %q: want NATS tokens without wildcards or spaces, e.g. nr", c.SubjectPrefix)
	}
	for _, s := range []struct{ name, v string }{{"NATS_EVENTS_STREAM", c.EventsStream}, {"NATS_REPLIES_STREAM", c.RepliesStream}, {"NATS_DLQ_STREAM", c.DLQStream}} {
		if !validStreamName(s.v) {
			return fmt.Errorf("%s %q: stream names cannot be empty or contain spaces, . * > / \\", s.name, s.v)
		}
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("NATS_STREAM_REPLICAS must be between 1 and 5, got %d", c.Replicas)
	}
	if c.MaxAge < 0 {
		return fmt.Errorf("NATS_STREAM_MAX_AGE must be >= 0, got %s", c.MaxAge)
	}
	if c.DuplicateWindow <= 0 || (c.MaxAge > 0 && c.DuplicateWindow > c.MaxAge) {
		return fmt.Errorf("NATS_DUPLICATE_WINDOW must be > 0 and <= NATS_STREAM_MAX_AGE, got %s", c.DuplicateWindow)
	}
	if c.PublishWindow < 1 || c.PublishWindow > 1<<20 {
		return fmt.Errorf("NATS_PUBLISH_WINDOW must be between 1 and 1048576, got %d", c.PublishWindow)
	}
	if c.AckTimeout <= 0 {
		return fmt.Errorf("NATS_ACK_TIMEOUT must be > 0, got %s", c.AckTimeout)
	}
	return nil
}

func validStreamName(s string) bool {
	return s != "" && !strings.ContainsAny(s, " \t\r\n.*>/\\")
}
