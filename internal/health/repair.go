package health

import "time"

// Repairer runs a repair (recreating a lost stream or topic) on its own
// goroutine when asked, at most once per interval, so that the write path
// that notices the loss never blocks on it and a burst of failures costs
// one repair. Run is the goroutine; its owner calls Stop and waits for
// Done.
type Repairer struct {
	interval time.Duration
	repair   func()
	ask      chan struct{}
	stop     chan struct{}
	done     chan struct{}
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

// Run repairs when asked, waiting out the rest of the interval since the
// last repair first, until Stop.
func (r *Repairer) Run() {
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

// Stop ends Run once a repair in progress finished; it does not wait (see
// Done). Call it once.
func (r *Repairer) Stop() { close(r.stop) }

// Done is closed when Run returned.
func (r *Repairer) Done() <-chan struct{} { return r.done }
