package health

import (
	"context"
	"sync/atomic"
	"time"
)

// Poller is the one readiness poller of the backbones: it runs a check on
// its own goroutine (the first at once, then every interval, or every retry
// while the check fails) and keeps the last answer, so Ready never blocks
// on the network or on a connection's lock. New starts nothing; Start
// starts the goroutine, Close stops it and waits.
type Poller struct {
	check    func(context.Context) error
	interval time.Duration
	retry    time.Duration
	changed  func(prev, now error)

	state  atomic.Pointer[error]
	cancel context.CancelFunc
	done   chan struct{}
}

// NewPoller returns a poller of check that reports initial until the
// first check returned. changed, if not nil, is called on the poller's
// goroutine with the previous and the new answer after every check (to log
// transitions); it must not block.
func NewPoller(initial error, interval, retry time.Duration, check func(context.Context) error, changed func(prev, now error)) *Poller {
	p := &Poller{check: check, interval: interval, retry: retry, changed: changed, done: make(chan struct{})}
	p.state.Store(&initial)
	return p
}

// Start starts polling; call it once. The goroutine runs until Close.
func (p *Poller) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go p.run(ctx)
}

func (p *Poller) run(ctx context.Context) {
	defer close(p.done)
	for {
		err := p.check(ctx)
		if ctx.Err() != nil {
			return
		}
		prev := *p.state.Swap(&err)
		if p.changed != nil {
			p.changed(prev, err)
		}
		wait := p.interval
		if err != nil {
			wait = p.retry
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
	}
}

// Ready returns the last check's answer (nil: ready).
func (p *Poller) Ready() error { return *p.state.Load() }

// Close stops polling and waits for the goroutine; it is a no-op when the
// poller was not started, and may be called more than once.
func (p *Poller) Close() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	<-p.done
}
