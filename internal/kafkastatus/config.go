package kafkastatus

import (
	"fmt"

	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
)

// Config is the status topic and the bounds of the view. Defaults are in
// the envDefault tags.
type Config struct {
	Topic       string `env:"KAFKA_STATUS_TOPIC" envDefault:"nr.command-status" desc:"compacted topic of command statuses, read by every replica"`
	MaxCommands int    `env:"KAFKA_STATUS_MAX_COMMANDS" envDefault:"10000" desc:"command statuses each replica holds in memory per org: the newest by acceptance; older ones answer 404 no longer held by this replica"`
	MaxBytes    int64  `env:"KAFKA_STATUS_MAX_BYTES" envDefault:"67108864" desc:"bytes of status records each replica holds in memory (about), for all orgs; over it the org holding the most loses its oldest first"`
}

// Validate checks the values against conn's other topics; errors name the
// variable.
func (c *Config) Validate(conn kafkaconn.Config) error {
	if !kafkaconn.ValidTopic(c.Topic) {
		return fmt.Errorf("KAFKA_STATUS_TOPIC %q: want 1 to 249 characters of a-z A-Z 0-9 . _ -, not . or ..", c.Topic)
	}
	for _, t := range conn.Topics() {
		if t == c.Topic {
			return fmt.Errorf("KAFKA_STATUS_TOPIC %q must differ from the events, replies, commands and dead-letter topics", c.Topic)
		}
	}
	if c.MaxCommands < 1 {
		return fmt.Errorf("KAFKA_STATUS_MAX_COMMANDS must be >= 1, got %d", c.MaxCommands)
	}
	if c.MaxBytes < 1<<20 {
		return fmt.Errorf("KAFKA_STATUS_MAX_BYTES must be at least 1048576, got %d", c.MaxBytes)
	}
	return nil
}
