// Package kafka reads commands from a Kafka topic with a consumer group and
// publishes them to MQTT through the bridge's validating publisher. A
// record's offset is committed only once its command was published (PUBACK)
// or dead-lettered (acknowledged by Kafka), so a crash or rebalance never
// skips a command.
package kafka

import "fmt"

// Config is the consuming side of the Kafka commands source; the
// connection, topic and group are in kafkaconn.Config. Defaults are in the
// envDefault tags.
type Config struct {
	PollRecords int `env:"KAFKA_COMMAND_POLL_RECORDS" envDefault:"500" desc:"commands taken from Kafka per poll at most; a poll's commands are published before the next poll"`
	Concurrency int `env:"KAFKA_COMMAND_CONCURRENCY" envDefault:"8" desc:"partitions of the commands topic published at the same time (commands of one partition go out one by one, in order)"`
}

// Validate checks the values; errors name the variable.
func (c *Config) Validate() error {
	if c.PollRecords < 1 || c.PollRecords > 100000 {
		return fmt.Errorf("KAFKA_COMMAND_POLL_RECORDS must be between 1 and 100000, got %d", c.PollRecords)
	}
	if c.Concurrency < 1 || c.Concurrency > 1024 {
		return fmt.Errorf("KAFKA_COMMAND_CONCURRENCY must be between 1 and 1024, got %d", c.Concurrency)
	}
	return nil
}
