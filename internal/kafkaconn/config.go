// Package kafkaconn holds what the Kafka sink and the Kafka commands source
// share: the configuration (brokers, security, topic names, consumer
// group), the franz-go client options built from it, topic creation at
// start, and a readiness monitor.
package kafkaconn

import (
	"fmt"
	"strings"
)

// Config is the Kafka side of the bridge: where the cluster is, how to
// authenticate, and the topics and consumer group the bridge uses. Defaults
// are in the envDefault tags.
type Config struct {
	Brokers  string `env:"KAFKA_BROKERS" envDefault:"localhost:9092" desc:"seed brokers, comma-separated host:port"`
	ClientID string `env:"KAFKA_CLIENT_ID" envDefault:"nr-bridge" desc:"client ID sent to the brokers (logs, quotas)"`

	TLS      bool   `env:"KAFKA_TLS" envDefault:"false" desc:"connect with TLS, verifying the brokers against the system roots; implied by KAFKA_CA_FILE, KAFKA_CERT_FILE and KAFKA_KEY_FILE"`
	CAFile   string `env:"KAFKA_CA_FILE" desc:"PEM CA bundle that signs the brokers' certificates (turns TLS on; default: system roots)"`
	CertFile string `env:"KAFKA_CERT_FILE" desc:"PEM client certificate for mTLS (with KAFKA_KEY_FILE; turns TLS on)"`
	KeyFile  string `env:"KAFKA_KEY_FILE" desc:"PEM client key for mTLS (with KAFKA_CERT_FILE; turns TLS on)"`

	SASLMechanism string `env:"KAFKA_SASL_MECHANISM" desc:"SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; unset = no SASL"`
	SASLUsername  string `env:"KAFKA_SASL_USERNAME" desc:"SASL username (with KAFKA_SASL_MECHANISM)"`
	SASLPassword  string `env:"KAFKA_SASL_PASSWORD" desc:"SASL password (with KAFKA_SASL_MECHANISM)" secret:"true"`

	EventsTopic   string `env:"KAFKA_EVENTS_TOPIC" envDefault:"nr.events" desc:"topic for node events, keyed org/<org>/node/<node>"`
	RepliesTopic  string `env:"KAFKA_REPLIES_TOPIC" envDefault:"nr.replies" desc:"topic for command replies, keyed org/<org>/node/<node>"`
	CommandsTopic string `env:"KAFKA_COMMANDS_TOPIC" envDefault:"nr.commands" desc:"topic the bridge reads commands from, keyed org/<org>/node/<node> or org/<org>/broadcast"`
	DLQTopic      string `env:"KAFKA_DLQ_TOPIC" envDefault:"nr.dlq" desc:"topic for dead letters (rejected events, replies and commands) with the reason in Nr-Error"`
	Group         string `env:"KAFKA_GROUP" desc:"consumer group of the commands reader, shared by the replicas of one scope so each command is published once; empty: nr-bridge, or nr-bridge-<ORG_ID> with ORG_ID"`

	CreateTopics      bool  `env:"KAFKA_CREATE_TOPICS" envDefault:"true" desc:"create missing topics at start; false = the topics must exist (managed clusters)"`
	TopicPartitions   int32 `env:"KAFKA_TOPIC_PARTITIONS" envDefault:"6" desc:"partitions of each topic the bridge creates (-1 = the broker's num.partitions)"`
	ReplicationFactor int16 `env:"KAFKA_REPLICATION_FACTOR" envDefault:"-1" desc:"replication factor of each topic the bridge creates (-1 = the broker's default.replication.factor)"`
	MaxMessageBytes   int   `env:"KAFKA_MAX_MESSAGE_BYTES" envDefault:"1000000" desc:"largest record batch the bridge produces; a topic's smaller max.message.bytes wins. A larger event or reply is dead-lettered, cut to fit"`
}

// The SASL mechanisms KAFKA_SASL_MECHANISM accepts.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// DeadLetterMargin is what a dead letter keeps free below the topic's
// limit (see Limits) for the record and batch framing when its value is cut
// to fit.
const DeadLetterMargin = 8192

// DefaultGroup is the commands consumer group of a bridge without ORG_ID
// when KAFKA_GROUP is empty; see CommandsGroup.
const DefaultGroup = "nr-bridge"

// CommandsGroup is the consumer group the commands reader joins: KAFKA_GROUP
// when set, else DefaultGroup for an unscoped bridge and
// "nr-bridge-<orgID>" for one scoped to orgID (ORG_ID). Replicas share the
// partitions of their group, so replicas of different scopes in one group
// would take each other's commands and dead-letter them as out of scope.
func (c *Config) CommandsGroup(orgID string) string {
	switch {
	case c.Group != "":
		return c.Group
	case orgID != "":
		return DefaultGroup + "-" + orgID
	}
	return DefaultGroup
}

// BrokerList returns the seed brokers of KAFKA_BROKERS, trimmed, without
// empty entries.
func (c *Config) BrokerList() []string {
	var out []string
	for _, b := range strings.Split(c.Brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// UseTLS reports whether connections use TLS: KAFKA_TLS or any of the TLS
// files is set.
func (c *Config) UseTLS() bool {
	return c.TLS || c.CAFile != "" || c.CertFile != "" || c.KeyFile != ""
}

// Topics returns every topic the bridge uses, without duplicates, in the
// order events, replies, commands, dead letters.
func (c *Config) Topics() []string {
	var out []string
	for _, t := range []string{c.EventsTopic, c.RepliesTopic, c.CommandsTopic, c.DLQTopic} {
		dup := false
		for _, o := range out {
			dup = dup || o == t
		}
		if !dup {
			out = append(out, t)
		}
	}
	return out
}

// Validate checks the values; errors name the variable.
func (c *Config) Validate() error {
	brokers := c.BrokerList()
	if len(brokers) == 0 {
		return fmt.Errorf("KAFKA_BROKERS %q: want host:port[,host:port...]", c.Brokers)
	}
	for _, b := range brokers {
		if i := strings.LastIndexByte(b, ':'); i <= 0 || i == len(b)-1 || strings.Contains(b, "://") {
			return fmt.Errorf("KAFKA_BROKERS %q: broker %q: want host:port without a scheme", c.Brokers, b)
		}
	}
	if c.ClientID == "" {
		return fmt.Errorf("KAFKA_CLIENT_ID must not be empty")
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return fmt.Errorf("KAFKA_CERT_FILE and KAFKA_KEY_FILE must be set together")
	}
	switch c.SASLMechanism {
	case "":
		if c.SASLUsername != "" || c.SASLPassword != "" {
			return fmt.Errorf("KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD need KAFKA_SASL_MECHANISM (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
		}
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		if c.SASLUsername == "" || c.SASLPassword == "" {
			return fmt.Errorf("KAFKA_SASL_MECHANISM=%s needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD", c.SASLMechanism)
		}
	default:
		return fmt.Errorf("KAFKA_SASL_MECHANISM %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.SASLMechanism)
	}
	for _, t := range []struct{ name, v string }{
		{"KAFKA_EVENTS_TOPIC", c.EventsTopic}, {"KAFKA_REPLIES_TOPIC", c.RepliesTopic},
		{"KAFKA_COMMANDS_TOPIC", c.CommandsTopic}, {"KAFKA_DLQ_TOPIC", c.DLQTopic},
	} {
		if !ValidTopic(t.v) {
			return fmt.Errorf("%s %q: want 1 to 249 characters of a-z A-Z 0-9 . _ -, not . or ..", t.name, t.v)
		}
	}
	// Reading commands from a topic the bridge also writes to would feed
	// events or dead letters back in as commands.
	for _, t := range []struct{ name, v string }{{"KAFKA_EVENTS_TOPIC", c.EventsTopic}, {"KAFKA_REPLIES_TOPIC", c.RepliesTopic}, {"KAFKA_DLQ_TOPIC", c.DLQTopic}} {
		if t.v == c.CommandsTopic {
			return fmt.Errorf("KAFKA_COMMANDS_TOPIC and %s must differ, both are %q", t.name, t.v)
		}
	}
	if c.TopicPartitions != -1 && (c.TopicPartitions < 1 || c.TopicPartitions > 10000) {
		return fmt.Errorf("KAFKA_TOPIC_PARTITIONS must be -1 or between 1 and 10000, got %d", c.TopicPartitions)
	}
	if c.ReplicationFactor != -1 && c.ReplicationFactor < 1 {
		return fmt.Errorf("KAFKA_REPLICATION_FACTOR must be -1 or >= 1, got %d", c.ReplicationFactor)
	}
	if c.MaxMessageBytes < 4*DeadLetterMargin || c.MaxMessageBytes > 1<<30 {
		return fmt.Errorf("KAFKA_MAX_MESSAGE_BYTES must be between %d and %d, got %d", 4*DeadLetterMargin, 1<<30, c.MaxMessageBytes)
	}
	return nil
}

// ValidTopic applies Kafka's topic name rule (1 to 249 characters of
// a-z A-Z 0-9 . _ -, not "." or ".."), so a bad name fails at start.
func ValidTopic(s string) bool {
	if s == "" || len(s) > 249 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
