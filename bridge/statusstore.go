package bridge

import (
	"context"
	"errors"
	"fmt"
)

// ErrStatusNotFound means no status is stored for the org and correlation
// ID: the command is unknown, or its status expired from the store. Over
// HTTP it is a 404.
var ErrStatusNotFound = errors.New("command status not found")

// ErrStatusEvicted means the store knows the command but no longer holds
// its status: the Kafka status view keeps only the newest
// KAFKA_STATUS_MAX_COMMANDS commands of each org. It wraps
// ErrStatusNotFound (over HTTP a 404, with this message rather than
// "never sent").
var ErrStatusEvicted = fmt.Errorf("command status no longer held by this replica: %w", ErrStatusNotFound)

// ErrStatusConflict means a StatusStore.Put lost a race: the status changed
// since the revision the caller read. The caller reads it again and
// re-applies its change (Tracker does).
var ErrStatusConflict = errors.New("command status changed concurrently")

// ErrStatusUnavailable means command tracking is not available: the
// backbone (and with it the status store) is not open yet, or the store
// cannot be reached. Over HTTP it is a 503.
var ErrStatusUnavailable = errors.New("command status store not available")

// StatusStore keeps command statuses where every replica sees them: the
// reply to a command may reach another replica than the one that published
// it. internal/natsstatus implements it on a JetStream key-value bucket,
// internal/kafkastatus on a compacted topic read by every replica. All
// methods are safe for concurrent use; a blocking call without a deadline
// in ctx gets the implementation's default one.
type StatusStore interface {
	// Get returns a copy of the status of org's command correlationID and
	// its revision, for Put; ErrStatusNotFound when there is none
	// (ErrStatusEvicted when the store knows it but does not hold it). A
	// stored value that cannot be decoded is ErrStatusNotFound with its
	// revision, so that the next Put replaces it.
	Get(ctx context.Context, org, correlationID string) (*CommandStatus, uint64, error)
	// Put stores s (under s.Org and s.CorrelationID) if the stored
	// revision is still rev, 0 meaning "no status yet", and returns the
	// new revision; ErrStatusConflict when another write came first.
	Put(ctx context.Context, s *CommandStatus, rev uint64) (uint64, error)
	// Watch sends the status of org's command correlationID each time it
	// changes, starting with the current one when there is one. Only the
	// latest status waits in the channel (a slow reader skips
	// intermediate ones). The channel is closed once ctx ends, or earlier
	// when the store stops watching (closed, or the status was evicted);
	// the store's goroutine for it ends with it. It does not poll.
	Watch(ctx context.Context, org, correlationID string) (<-chan *CommandStatus, error)
}

// ReplyRecorder is a StatusStore that may know a command without holding
// its status (Get answers ErrStatusEvicted), as the bounded Kafka view
// does. Tracker calls it for a reply whose command Get did not return, so
// that the reply is still recorded where every replica sees it.
type ReplyRecorder interface {
	// RecordReply records r as a reply to org's command correlationID
	// when the store knows that command, from r.Node's point of view (its
	// target node, or any node for a broadcast), without holding it. It
	// first catches up with what other replicas wrote, and returns
	// ErrStatusConflict when the store then holds the command (the caller
	// reads it again). recorded is false when the store knows no such
	// command; first is true when the reply is the command's first final
	// step this store knows of.
	RecordReply(ctx context.Context, org, correlationID string, r Reply) (recorded, first bool, err error)
}

// OfferStatus puts s into ch, a channel with a buffer of one that only its
// caller writes to, replacing a status nobody read yet, so a watcher never
// blocks the store. Stores use it to feed Watch channels.
func OfferStatus(ch chan *CommandStatus, s *CommandStatus) {
	for {
		select {
		case ch <- s:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}
