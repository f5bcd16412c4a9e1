package kafkastatus

import (
	"context"
	"fmt"
	"slices"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// List returns up to limit of org's command statuses that this replica's
// view holds, newest first (by the time the bridge accepted them). The
// view keeps at most KAFKA_STATUS_MAX_COMMANDS commands of an org, so
// that is also the most a listing can show. It does not block on the
// topic: it answers from the view as it stands.
func (s *Store) List(_ context.Context, org string, limit int) ([]*bridge.CommandStatus, error) {
	if !bridge.ValidID(org) {
		return nil, fmt.Errorf("list statuses of org %q: %w", org, bridge.ErrInvalidID)
	}
	if limit <= 0 {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.view.orgs[org]
	if o == nil {
		return nil, nil
	}
	now := s.now()
	out := make([]*bridge.CommandStatus, 0, min(limit, o.held.Len()))
	for _, e := range slices.Clone(o.held) { // held may evict stale entries from o.held
		if e = s.view.held(e.key, now); e == nil || e.cmd == nil {
			continue // only replies arrived so far, or stale
		}
		out = append(out, e.doc())
	}
	slices.SortFunc(out, func(a, b *bridge.CommandStatus) int {
		if c := b.AcceptedAt.Compare(a.AcceptedAt); c != 0 {
			return c
		}
		return cmpString(a.CorrelationID, b.CorrelationID)
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
