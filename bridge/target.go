package bridge

import (
	"fmt"
	"strconv"
	"strings"
)

// Target is where a command goes: one node of an org, or every node of the
// org when Node is empty (a broadcast). Build one from an HTTP path and call
// Validate, or get a valid one from ParseCommandSubject or ParseCommandKey;
// the topic, subject and key methods assume a valid Target.
type Target struct {
	// Org is the organization ID.
	Org string
	// Node is the node ID, or "" for a broadcast to the whole org.
	Node string
}

// Broadcast reports whether the command goes to every node of the org.
func (t Target) Broadcast() bool { return t.Node == "" }

// Validate checks both IDs against the ID rule (see ValidID); an empty Node
// is a broadcast and valid. The error wraps ErrInvalidID (and
// ErrInvalidTarget) and names the bad ID; it must be checked before any
// topic, subject or key is built from the Target, because an ID with a
// wildcard, separator or NUL would make the broker drop the connection or
// route the command elsewhere.
func (t Target) Validate() error {
	if !ValidID(t.Org) {
		return commandIDError("org", t.Org, "")
	}
	if t.Node != "" && !ValidID(t.Node) {
		return commandIDError("node", t.Node, "")
	}
	return nil
}

// MQTTTopic is the MQTT topic the command is published to:
// `org/<org>/node/<node>/cmd`, or `org/<org>/broadcast/cmd` for a broadcast.
func (t Target) MQTTTopic() string {
	return t.Key() + "/cmd"
}

// ReplyTopic is the MQTT v5 response topic sent with a node command:
// `org/<org>/node/<node>/reply`. It is "" for a broadcast, which gets no
// response topic, because replies from many nodes to one command are not a
// request/response exchange.
func (t Target) ReplyTopic() string {
	if t.Broadcast() {
		return ""
	}
	return t.Key() + "/reply"
}

// Subject is the NATS subject of the command on the commands stream: prefix
// (the configured subject prefix, default "nr") then the MQTT topic levels
// joined with dots: `<prefix>.org.<org>.node.<node>.cmd` or
// `<prefix>.org.<org>.broadcast.cmd`.
func (t Target) Subject(prefix string) string {
	if t.Broadcast() {
		return prefix + ".org." + t.Org + ".broadcast.cmd"
	}
	return prefix + ".org." + t.Org + ".node." + t.Node + ".cmd"
}

// Key is the Kafka record key of the command: the MQTT topic without its
// last level, `org/<org>/node/<node>` or `org/<org>/broadcast`. Keying by
// target keeps one node's commands in one partition, in order.
func (t Target) Key() string {
	if t.Broadcast() {
		return "org/" + t.Org + "/broadcast"
	}
	return "org/" + t.Org + "/node/" + t.Node
}

// ParseCommandSubject reads the target of a command from its NATS subject,
// `<prefix>.org.<org>.node.<node>.cmd` or `<prefix>.org.<org>.broadcast.cmd`,
// with both IDs validated. The error wraps ErrInvalidTarget, and also
// ErrInvalidID when an ID is the problem; it quotes the subject and says
// what is wrong.
func ParseCommandSubject(prefix, subject string) (Target, error) {
	rest, ok := strings.CutPrefix(subject, prefix+".")
	if !ok {
		return Target{}, commandTargetError(fmt.Sprintf("subject %q: does not start with %q", subject, prefix+"."))
	}
	parts := strings.Split(rest, ".")
	switch {
	case len(parts) == 5 && parts[0] == "org" && parts[2] == "node" && parts[4] == "cmd":
		return commandParsedTarget("subject", subject, parts[1], parts[3], true)
	case len(parts) == 4 && parts[0] == "org" && parts[2] == "broadcast" && parts[3] == "cmd":
		return commandParsedTarget("subject", subject, parts[1], "", false)
	}
	return Target{}, commandTargetError(fmt.Sprintf("subject %q: want %s.org.<org>.node.<node>.cmd or %s.org.<org>.broadcast.cmd", subject, prefix, prefix))
}

// ParseCommandKey reads the target of a command from its Kafka record key,
// `org/<org>/node/<node>` or `org/<org>/broadcast`, with both IDs validated.
// The error wraps ErrInvalidTarget, and also ErrInvalidID when an ID is the
// problem; it quotes the key and says what is wrong.
func ParseCommandKey(key string) (Target, error) {
	parts := strings.Split(key, "/")
	switch {
	case len(parts) == 4 && parts[0] == "org" && parts[2] == "node":
		return commandParsedTarget("key", key, parts[1], parts[3], true)
	case len(parts) == 3 && parts[0] == "org" && parts[2] == "broadcast":
		return commandParsedTarget("key", key, parts[1], "", false)
	}
	return Target{}, commandTargetError(fmt.Sprintf("key %q: want org/<org>/node/<node> or org/<org>/broadcast", key))
}

// commandParsedTarget validates the IDs read from a subject or key. In the
// node form an empty node ID is an error, not a broadcast.
func commandParsedTarget(what, s, org, node string, isNode bool) (Target, error) {
	where := what + " " + strconv.Quote(s) + ": "
	if !ValidID(org) {
		return Target{}, commandIDError("org", org, where)
	}
	if isNode && !ValidID(node) {
		return Target{}, commandIDError("node", node, where)
	}
	return Target{Org: org, Node: node}, nil
}

// commandIDError is an ErrInvalidID (and ErrInvalidTarget) error naming the
// bad ID.
func commandIDError(which, id, where string) error {
	return &commandTargetErr{
		msg: fmt.Sprintf("%s%s id %q: must be 1 to %d characters of A-Z a-z 0-9 _ -: %v", where, which, id, MaxIDLen, ErrInvalidID),
		id:  true,
	}
}

func commandTargetError(msg string) error {
	return &commandTargetErr{msg: msg + ": " + ErrInvalidTarget.Error()}
}

// commandTargetErr matches ErrInvalidTarget, and ErrInvalidID when id is
// set, so callers can test for either.
type commandTargetErr struct {
	msg string
	id  bool
}

func (e *commandTargetErr) Error() string { return e.msg }

func (e *commandTargetErr) Is(target error) bool {
	return target == ErrInvalidTarget || e.id && target == ErrInvalidID
}
