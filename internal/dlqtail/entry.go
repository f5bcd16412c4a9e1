// Package dlqtail reads the most recent dead letters back from the
// backbone (NATS stream NR_DLQ, Kafka topic nr.dlq) for the operator
// console: when, why, where from and how large, never the payload.
//
// A dead letter belongs to an org when its origin names a valid one: the
// Nr-Org header of an event or reply, else the org of a command dead
// letter's subject (Nr-Subject) or record key (Nr-Source-Key). Recent
// returns only the dead letters of the org asked for; those with no valid
// org (a topic such as org/bad.org/node/n1/events) are listed by no org
// and stay for operators to read from the backbone itself
// (docs/console.md).
package dlqtail

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// Entry is one dead letter as the console shows it.
type Entry struct {
	// Time is when the backbone stored the dead letter.
	Time time.Time `json:"time"`
	// Reason is the reason label (bridge.Reasons: invalid_id, poison ...)
	// read from Nr-Error; other when the line names none.
	Reason string `json:"reason"`
	// Error is the Nr-Error line.
	Error string `json:"error"`
	// Org and Node are the dead letter's org and node, when known.
	Org  string `json:"org"`
	Node string `json:"node,omitempty"`
	// Kind is events, reply or command.
	Kind string `json:"kind"`
	// Origin is the MQTT topic (Nr-Topic) of an event or reply, the
	// command subject (Nr-Subject) or record key (Nr-Source-Key) of a
	// command.
	Origin string `json:"origin"`
	// Size is the payload's size as received (Nr-Original-Size when the
	// dead letter was cut to fit, else the stored payload's size).
	Size int `json:"size"`
	// Cut says the stored payload is shorter than Size.
	Cut bool `json:"cut,omitempty"`
	// Position is where the dead letter is: the stream sequence, or
	// partition/offset on Kafka.
	Position string `json:"position"`
}

// DefaultScan is how many of the newest dead letters Recent reads at most
// to find an org's: enough for a console, bounded whatever the stream
// holds.
const DefaultScan = 1000

// MaxLimit is the most entries Recent returns.
const MaxLimit = 200

// header reads one header of a dead letter.
type header func(name string) string

// entryOf builds the entry of a dead letter from its headers; stored is
// the stored payload's size. It reports the org the entry belongs to
// ("" when none is valid). prefix is the NATS subject prefix, "" on Kafka.
func entryOf(h header, stored int, prefix string) Entry {
	e := Entry{Error: h(bridge.HeaderError), Size: stored}
	e.Reason = reasonOf(h(bridge.HeaderReason))
	if n, err := strconv.Atoi(h(bridge.HeaderOriginalSize)); err == nil && n > stored {
		e.Size, e.Cut = n, true
	}
	switch {
	case h(bridge.HeaderTopic) != "":
		e.Origin = h(bridge.HeaderTopic)
		e.Kind = h(bridge.HeaderKind)
		if org := h(bridge.HeaderOrg); bridge.ValidID(org) {
			e.Org = org
			if node := h(bridge.HeaderNode); bridge.ValidID(node) {
				e.Node = node
			}
		}
	case h(bridge.HeaderSubject) != "":
		e.Origin, e.Kind = h(bridge.HeaderSubject), "command"
		if t, err := bridge.ParseCommandSubject(prefix, e.Origin); err == nil {
			e.Org, e.Node = t.Org, t.Node
		}
	case h(headerSourceKey) != "":
		e.Origin, e.Kind = h(headerSourceKey), "command"
		if t, err := bridge.ParseCommandKey(e.Origin); err == nil {
			e.Org, e.Node = t.Org, t.Node
		}
	}
	return e
}

// headerSourceKey is sources/kafka.HeaderSourceKey: the record key of a
// command dead letter (not imported: a reader of the topic does not need
// the commands source).
const headerSourceKey = "Nr-Source-Key"

// reasonOf is the reason label a dead letter carries in Nr-Reason, set by
// the bridge from bridge.Classify when it wrote the dead letter;
// bridge.ReasonOther for a value outside bridge.Reasons (a dead letter
// written before the header existed, or by something else).
func reasonOf(label string) string {
	if slices.Contains(bridge.Reasons, label) {
		return label
	}
	return bridge.ReasonOther
}

// bounds checks the org and the limit of a Recent call and gives ctx the
// default deadline when it has none; limit 0 means there is nothing to
// read. The caller defers cancel.
func bounds(ctx context.Context, org string, limit int) (context.Context, context.CancelFunc, int, error) {
	if !bridge.ValidID(org) {
		return ctx, func() {}, 0, fmt.Errorf("dead letters of org %q: %w", org, bridge.ErrInvalidID)
	}
	limit = min(limit, MaxLimit)
	if _, ok := ctx.Deadline(); ok || limit <= 0 {
		return ctx, func() {}, max(limit, 0), nil
	}
	ctx, cancel := context.WithTimeout(ctx, defaultTimeout)
	return ctx, cancel, limit, nil
}
