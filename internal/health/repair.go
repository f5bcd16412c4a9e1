package health

import (
	"sync"
	"time"
)

// Repairer runs a repair (recreating a lost stream or topic) on its own
// goroutine when asked, at most once per interval, so that the write path
// that notices the loss never blocks on it and a burst of failures costs
// one repair. NewRepairer starts nothing; its owner calls Start, and Close
// to stop it and wait.
type Repairer struct {
	interval time.Duration
	repair   func()
	ask      chan struct{}
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	started  bool
}

// NewRepairer returns a repairer of repair; it starts nothing.
func NewRepairer(interval time.Duration, repair func()) *Repairer {
	return &Repairer{interval: interval, repair: repair,
		ask: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// Ask asks for a repair; it never blocks, and asks made before the repair
// starts count once.
func (r *Repairer) Ask() {
	select {
	case r.ask <- struct{}{}:
	default:
	}
}

// Start starts the repair goroutine; call it once, before Close.
func (r *Repairer) Start() {
	r.started = true
	go r.run()
}

// run repairs when asked, waiting out the rest of the interval since the
// last repair first, until Close.
func (r *Repairer) run() {
	defer close(r.done)
	var last time.Time
	for {
		select {
		case <-r.ask:
		case <-r.stop:
			return
		}
		if wait := time.Until(last.Add(r.interval)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-r.stop:
				return
			}
		}
		last = time.Now()
		r.repair()
	}
}

// Stop asks the goroutine to end once a repair in progress finished; it
// does not wait (see Done). It may be called more than once.
func (r *Repairer) Stop() { r.stopOnce.Do(func() { close(r.stop) }) }

// Done is closed when the goroutine returned; never for a repairer that
// was not started.
func (r *Repairer) Done() <-chan struct{} { return r.done }

// Close stops the repairer and waits for a repair in progress; a no-op
// wait for one never started.
func (r *Repairer) Close() {
	r.Stop()
	if r.started {
		<-r.done
	}
}
