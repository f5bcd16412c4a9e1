package natsstatus

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// List returns up to limit of org's command statuses, newest first (by
// the time the bridge accepted them). It reads the org's keys with one
// watch on "<org>.>" (an ordered consumer that delivers each key's
// current value, then stops), not one request per key. An empty list is
// no error; undecodable values are skipped with a WARN.
func (s *Store) List(ctx context.Context, org string, limit int) ([]*bridge.CommandStatus, error) {
	if !bridge.ValidID(org) {
		return nil, fmt.Errorf("list statuses of org %q: %w", org, bridge.ErrInvalidID)
	}
	if limit <= 0 {
		return nil, nil
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	w, err := s.kv.Watch(ctx, org+".>", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list statuses of org %s: %w", org, err)
	}
	defer func() { _ = w.Stop() }()
	var out []*bridge.CommandStatus
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("list statuses of org %s: watch ended early", org)
			}
			if e == nil { // every current value delivered
				return newestFirst(out, limit), nil
			}
			st, err := s.decode(e.Key(), e.Value())
			if err != nil {
				s.log.Warn("undecodable command status skipped in a listing", "key", e.Key(), "err", err)
				continue
			}
			out = append(out, st)
			if len(out) >= 4*limit {
				// Keep memory bounded by the limit, whatever the org holds.
				out = newestFirst(out, limit)
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("list statuses of org %s: %w", org, errors.Join(bridge.ErrStatusUnavailable, ctx.Err()))
		}
	}
}

// newestFirst sorts by accepted time, newest first (correlation ID breaks
// ties, so the order is stable), and keeps the first limit.
func newestFirst(sts []*bridge.CommandStatus, limit int) []*bridge.CommandStatus {
	slices.SortFunc(sts, func(a, b *bridge.CommandStatus) int {
		if c := b.AcceptedAt.Compare(a.AcceptedAt); c != 0 {
			return c
		}
		switch {
		case a.CorrelationID < b.CorrelationID:
			return -1
		case a.CorrelationID > b.CorrelationID:
			return 1
		}
		return 0
	})
	if len(sts) > limit {
		sts = sts[:limit]
	}
	return sts
}
