// Package natsjs reads the commands stream NR_COMMANDS from NATS JetStream
// and hands each command to the bridge's validating publisher: a durable
// pull consumer shared by every replica as a work queue, a message acked
// only after the broker's PUBACK, invalid ones dead-lettered to
// <prefix>.dlq.cmd, and a broker outage retried with a growing delay until
// the command's TTL runs out.
package natsjs

import (
	"fmt"
	"strings"
	"time"
)

// Config is the commands source. Defaults are in the envDefault tags. The
// subject prefix, the dead-letter stream and whether streams are managed
// come from the JetStream sink's configuration (NATS_SUBJECT_PREFIX,
// NATS_DLQ_STREAM, NATS_MANAGE_STREAMS ...), shared by both.
type Config struct {
	Stream        string        `env:"NATS_COMMANDS_STREAM" envDefault:"NR_COMMANDS" desc:"work-queue stream the commands come from (<prefix>.org.*.node.*.cmd and <prefix>.org.*.broadcast.cmd)"`
	Consumer      string        `env:"NATS_COMMANDS_CONSUMER" desc:"durable pull consumer on the commands stream, shared by the replicas of one scope; empty: nr-bridge, or nr-bridge-<ORG_ID> filtered to that org's subjects with ORG_ID"`
	Concurrency   int           `env:"NATS_COMMANDS_CONCURRENCY" envDefault:"16" desc:"commands one replica publishes at the same time (1 to 1024); also how many it pulls ahead"`
	AckWait       time.Duration `env:"NATS_COMMANDS_ACK_WAIT" envDefault:"30s" desc:"how long the server waits for a command's ack before it redelivers it; must exceed MQTT_PUBLISH_TIMEOUT"`
	MaxAckPending int           `env:"NATS_COMMANDS_MAX_ACK_PENDING" envDefault:"1000" desc:"un-acked commands out at once over all replicas (includes those waiting for a retry)"`
	RetryMin      time.Duration `env:"NATS_COMMANDS_RETRY_MIN" envDefault:"1s" desc:"first redelivery delay of a command the broker could not take (not connected, no PUBACK in time), doubled per attempt"`
	RetryMax      time.Duration `env:"NATS_COMMANDS_RETRY_MAX" envDefault:"30s" desc:"longest redelivery delay; never past the command's TTL"`
}

// Validate checks the values; errors name the variable.
func (c *Config) Validate() error {
	if c.Stream == "" || strings.ContainsAny(c.Stream, " \t\r\n.*>/\\") {
		return fmt.Errorf("NATS_COMMANDS_STREAM %q: stream names cannot be empty or contain spaces, . * > / \\", c.Stream)
	}
	if strings.ContainsAny(c.Consumer, " \t\r\n.*>/\\") {
		return fmt.Errorf("NATS_COMMANDS_CONSUMER %q: consumer names cannot contain spaces, . * > / \\", c.Consumer)
	}
	if c.Concurrency < 1 || c.Concurrency > 1024 {
		return fmt.Errorf("NATS_COMMANDS_CONCURRENCY must be between 1 and 1024, got %d", c.Concurrency)
	}
	if c.AckWait < time.Second {
		return fmt.Errorf("NATS_COMMANDS_ACK_WAIT must be at least 1s, got %s", c.AckWait)
	}
	if c.MaxAckPending < c.Concurrency {
		return fmt.Errorf("NATS_COMMANDS_MAX_ACK_PENDING must be at least NATS_COMMANDS_CONCURRENCY (%d), got %d", c.Concurrency, c.MaxAckPending)
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		return fmt.Errorf("NATS_COMMANDS_RETRY_MIN must be > 0 and <= NATS_COMMANDS_RETRY_MAX, got %s and %s", c.RetryMin, c.RetryMax)
	}
	return nil
}

// DefaultConsumer is the durable consumer of a bridge without ORG_ID when
// NATS_COMMANDS_CONSUMER is empty; see ConsumerFor.
const DefaultConsumer = "nr-bridge"

// ConsumerFor is the durable consumer the commands source binds to:
// NATS_COMMANDS_CONSUMER when set, else DefaultConsumer for an unscoped
// bridge and "nr-bridge-<orgID>" for one scoped to orgID (ORG_ID), whose
// consumer is filtered to that org's subjects. Replicas share the messages
// of their consumer, so replicas of different scopes on one consumer would
// take each other's commands and dead-letter them as out of scope.
func (c *Config) ConsumerFor(orgID string) string {
	switch {
	case c.Consumer != "":
		return c.Consumer
	case orgID != "":
		return DefaultConsumer + "-" + orgID
	}
	return DefaultConsumer
}
