// Package kafka writes node events and replies to Kafka: one record per
// MQTT message, keyed org/<org>/node/<node>, produced asynchronously with a
// bounded window, and reported written only once the cluster acknowledged
// it (acks=all).
package kafka

import (
	"fmt"
	"time"
)

// Config is the producing side of the Kafka sink; the connection and topic
// names are in kafkaconn.Config. Defaults are in the envDefault tags.
type Config struct {
	Window int `env:"KAFKA_PRODUCE_WINDOW" envDefault:"4096" desc:"records awaiting their produce acknowledgement at most; writes wait beyond that (backpressure to MQTT)"`
	// UnhealthyAfter is how long every produce may fail before Ready (and
	// so /readyz and nr_bridge_backbone_connected) reports the backbone
	// unhealthy although the cluster answers.
	UnhealthyAfter time.Duration `env:"KAFKA_UNHEALTHY_AFTER" envDefault:"15s" desc:"how long every produce may fail (e.g. a cluster that lost its topics) before /readyz reports Kafka not ready"`
}

// DefaultUnhealthyAfter is KAFKA_UNHEALTHY_AFTER's default, also used by
// New for a Config that leaves it zero.
const DefaultUnhealthyAfter = 15 * time.Second

// Validate checks the values; errors name the variable.
func (c *Config) Validate() error {
	if c.Window < 1 || c.Window > 1<<20 {
		return fmt.Errorf("KAFKA_PRODUCE_WINDOW must be between 1 and 1048576, got %d", c.Window)
	}
	if c.UnhealthyAfter <= 0 {
		return fmt.Errorf("KAFKA_UNHEALTHY_AFTER must be > 0, got %s", c.UnhealthyAfter)
	}
	return nil
}
