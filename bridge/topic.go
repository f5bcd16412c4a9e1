package bridge

import (
	"fmt"
	"strings"
)

// Kind is the kind of an agent-to-backbone message, taken from the last level
// of its MQTT topic.
type Kind string

// The kinds the workers forward; each has its own stream, topic and
// dead-letter subject.
const (
	KindEvents Kind = "events"
	KindReply  Kind = "reply"
)

// MaxIDLen is the longest org or node ID the bridge accepts.
const MaxIDLen = 64

// ValidID reports whether s is a valid org or node ID: 1 to 64 characters of
// A-Z a-z 0-9 _ -. The allowlist keeps MQTT wildcards, NATS token separators,
// `$`-reserved prefixes, NUL and path separators out of every topic, subject
// and key the bridge builds.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// NodeTopic is a parsed `org/<org>/node/<node>/<kind>` MQTT topic.
type NodeTopic struct {
	Org  string
	Node string
	Kind Kind
}

// ParseNodeTopic parses an event or reply topic. It returns the parts it
// could read even when an ID is invalid (the error then wraps ErrInvalidID),
// so the caller can still dead-letter the message under the right kind.
func ParseNodeTopic(topic string) (NodeTopic, error) {
	var t NodeTopic
	rest, ok := strings.CutPrefix(topic, "org/")
	if !ok {
		return t, fmt.Errorf("topic %q: does not start with org/", topic)
	}
	org, rest, ok := strings.Cut(rest, "/node/")
	if !ok {
		return t, fmt.Errorf("topic %q: want org/<org>/node/<node>/<kind>", topic)
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return t, fmt.Errorf("topic %q: want org/<org>/node/<node>/<kind>", topic)
	}
	t.Org, t.Node, t.Kind = org, rest[:i], Kind(rest[i+1:])
	if t.Kind != KindEvents && t.Kind != KindReply {
		return t, fmt.Errorf("topic %q: kind %q is neither events nor reply", topic, t.Kind)
	}
	if !ValidID(t.Org) {
		return t, fmt.Errorf("topic %q: org id %q: %w", topic, t.Org, ErrInvalidID)
	}
	if !ValidID(t.Node) {
		return t, fmt.Errorf("topic %q: node id %q: %w", topic, t.Node, ErrInvalidID)
	}
	return t, nil
}

// Subject is the NATS subject for the topic: prefix, then the MQTT levels
// joined with dots (`nr.org.o1.node.n1.events`). Only valid for a topic that
// parsed without error.
func (t NodeTopic) Subject(prefix string) string {
	return prefix + ".org." + t.Org + ".node." + t.Node + "." + string(t.Kind)
}

// Key is the Kafka record key: the MQTT topic without its last level.
func (t NodeTopic) Key() string {
	return "org/" + t.Org + "/node/" + t.Node
}

// DeadLetterSubject is where a rejected message of kind k goes on NATS:
// `<prefix>.dlq.events`, `<prefix>.dlq.reply` or `<prefix>.dlq.cmd`.
func DeadLetterSubject(prefix, k string) string {
	return prefix + ".dlq." + k
}

// SubscriptionFilters returns the shared-subscription filters the workers
// subscribe to: events and replies of every org, or of orgID when it is set.
func SubscriptionFilters(shareGroup, orgID string) []string {
	org := "+"
	if orgID != "" {
		org = orgID
	}
	base := "$share/" + shareGroup + "/org/" + org + "/node/+/"
	return []string{base + string(KindEvents), base + string(KindReply)}
}
