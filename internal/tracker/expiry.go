package tracker

import (
	"container/heap"
	"sync"
	"time"
)

// expiry is one command whose TTL runs out at at.
type expiry struct {
	at            time.Time
	org           string
	correlationID string
	issuedAt      int64 // tells the command from a later one with the same ID
}

// expiries runs fire for each added expiry once its time came, on one
// goroutine, in time order. It holds at most max pending expiries (more
// are ignored). stop ends the goroutine; pending expiries are dropped.
type expiries struct {
	fire func(expiry)
	max  int

	mu   sync.Mutex
	h    expiryHeap
	wake chan struct{} // a new earliest expiry
	quit chan struct{}
	done chan struct{}
	once sync.Once
}

func newExpiries(max int, fire func(expiry)) *expiries {
	e := &expiries{
		fire: fire,
		max:  max,
		wake: make(chan struct{}, 1),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	return e
}

// start runs the timer loop until stop.
func (e *expiries) start() { go e.loop() }

// add schedules x; it never blocks.
func (e *expiries) add(x expiry) {
	e.mu.Lock()
	if len(e.h) >= e.max {
		e.mu.Unlock()
		return
	}
	heap.Push(&e.h, x)
	earliest := e.h[0].at.Equal(x.at)
	e.mu.Unlock()
	if earliest {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	}
}

func (e *expiries) loop() {
	defer close(e.done)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		e.mu.Lock()
		var due []expiry
		now := time.Now()
		for len(e.h) > 0 && !e.h[0].at.After(now) {
			due = append(due, heap.Pop(&e.h).(expiry))
		}
		next := time.Hour
		if len(e.h) > 0 {
			next = e.h[0].at.Sub(now)
		}
		e.mu.Unlock()
		for _, x := range due {
			select {
			case <-e.quit:
				return
			default:
			}
			e.fire(x)
		}
		t.Reset(next)
		select {
		case <-t.C:
		case <-e.wake:
		case <-e.quit:
			return
		}
	}
}

// stop ends the goroutine, waiting for a fire in progress.
func (e *expiries) stop() {
	e.once.Do(func() { close(e.quit) })
	<-e.done
}

// expiryHeap is a min-heap on at (container/heap).
type expiryHeap []expiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
