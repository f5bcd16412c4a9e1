package bridge

import (
	"fmt"
	"hash/fnv"
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

// maxSubscriptionID is the largest MQTT v5 subscription identifier.
const maxSubscriptionID = 268_435_455

// ScopeSubscriptionID is the MQTT v5 subscription identifier the workers
// give their subscriptions for the scope orgID ("" for every org): 1
// unscoped, else derived from orgID. The broker sends it back with every
// message, so a message that arrives with another identifier (or none) came
// through a subscription of an earlier scope that the persistent session
// still holds; the worker then removes it (StaleFilters).
func ScopeSubscriptionID(orgID string) int {
	if orgID == "" {
		return 1
	}
	h := fnv.New32a()
	h.Write([]byte(orgID))
	return 2 + int(h.Sum32()%(maxSubscriptionID-1))
}

// InScope reports whether a message on topic may be forwarded by a bridge
// scoped to orgID: always when orgID is "", else only when the topic's
// org level is orgID. It is checked on every message received, not only in
// the subscription, because a persistent session can still hold the
// subscription of an earlier scope.
func InScope(topic, orgID string) bool {
	if orgID == "" {
		return true
	}
	rest, ok := strings.CutPrefix(topic, "org/")
	return ok && strings.HasPrefix(rest, orgID+"/")
}

// StaleFilters returns the filters through which an earlier scope of this
// bridge could have delivered topic, minus the current ones of orgID:
// those of the topic's own org and, for a scoped bridge, the unscoped
// ones. Unsubscribing a filter the session does not hold is harmless
// (reason 0x11), so the list may name more than the session has.
func StaleFilters(shareGroup, orgID, topic string) []string {
	var out []string
	current := SubscriptionFilters(shareGroup, orgID)
	add := func(fs []string) {
		for _, f := range fs {
			if f != current[0] && f != current[1] {
				out = append(out, f)
			}
		}
	}
	if orgID != "" {
		add(SubscriptionFilters(shareGroup, ""))
	}
	if rest, ok := strings.CutPrefix(topic, "org/"); ok {
		if org, _, ok := strings.Cut(rest, "/"); ok && org != "" && !strings.ContainsAny(org, "+#") {
			add(SubscriptionFilters(shareGroup, org))
		}
	}
	return out
}
