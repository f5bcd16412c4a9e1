package kafka

import (
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// completion is one produce outcome on its way to the caller's done.
type completion struct {
	m    *bridge.Message
	r    *kgo.Record
	err  error
	done func(error)
	slot bool // holds a window slot
}

// completionQueue hands produce outcomes from franz-go's promise goroutine
// to the sink's completion goroutine. push never blocks: franz-go calls
// promises serially and a blocked promise stalls the whole client. It is
// unbounded, but holds at most one entry per record in flight, which the
// window bounds.
type completionQueue struct {
	mu     sync.Mutex
	items  []completion
	closed bool
	wake   chan struct{}
}

func newCompletionQueue() *completionQueue {
	return &completionQueue{wake: make(chan struct{}, 1)}
}

func (q *completionQueue) push(c completion) {
	q.mu.Lock()
	q.items = append(q.items, c)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// next waits for completions and returns them all, handing spare back as
// the next buffer; it returns false once the queue is closed and empty.
func (q *completionQueue) next(spare []completion) ([]completion, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			items := q.items
			q.items = spare[:0]
			q.mu.Unlock()
			return items, true
		}
		if q.closed {
			q.mu.Unlock()
			return nil, false
		}
		q.mu.Unlock()
		<-q.wake
	}
}

// close makes next return false once the queue is empty.
func (q *completionQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
