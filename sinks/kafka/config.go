// Package kafka writes node events and replies to Kafka: one record per
// MQTT message, keyed org/<org>/node/<node>, produced asynchronously with a
// bounded window, and reported written only once the cluster acknowledged
// it (acks=all).
package kafka

import "fmt"

// Config is the producing side of the Kafka sink; the connection and topic
// names are in kafkaconn.Config. Defaults are in the envDefault tags.
type Config struct {
	Window int `env:"KAFKA_PRODUCE_WINDOW" envDefault:"4096" desc:"records awaiting their produce acknowledgement at most; writes wait beyond that (backpressure to MQTT)"`
}

// Validate checks the values; errors name the variable.
func (c *Config) Validate() error {
	if c.Window < 1 || c.Window > 1<<20 {
		return fmt.Errorf("KAFKA_PRODUCE_WINDOW must be between 1 and 1048576, got %d", c.Window)
	}
	return nil
}
