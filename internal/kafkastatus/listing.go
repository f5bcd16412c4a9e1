package kafkastatus

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
)

// catchUp waits until the view read everything the topic held when it
// was called: what other replicas wrote until then.
func (s *Store) catchUp(ctx context.Context) error {
	s.lmu.Lock()
	l := s.next
	if l == nil {
		l = &listing{done: make(chan struct{})}
		s.next = l
		if !s.listing {
			s.listing = true
			s.listings.Add(1)
			go s.list()
		}
	}
	s.lmu.Unlock()
	select {
	case <-l.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if l.err != nil {
		return l.err
	}
	return s.waitApplied(ctx, l.target)
}

// list runs the listings callers wait for, one after the other, until
// none waits; Close ends it (the client closes).
func (s *Store) list() {
	defer s.listings.Done()
	for {
		s.lmu.Lock()
		l := s.next
		s.next = nil
		if l == nil {
			s.listing = false
			s.lmu.Unlock()
			return
		}
		s.lmu.Unlock()
		ctx, cancel := context.WithTimeout(s.ctx, defaultTimeout)
		ends, err := s.adm.ListEndOffsets(ctx, s.cfg.Topic)
		cancel()
		if err == nil {
			err = ends.Error()
		}
		if err != nil {
			l.err = fmt.Errorf("list end offsets of %s: %w", s.cfg.Topic, err)
		} else {
			l.target = map[int32]int64{}
			ends.Each(func(o kadm.ListedOffset) {
				if o.Offset > 0 {
					l.target[o.Partition] = o.Offset
				}
			})
		}
		close(l.done)
	}
}
