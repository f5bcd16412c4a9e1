package tracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/ratelog"
)

// Tracker keeps the status of every command in a StatusStore shared by
// the replicas: the publisher reports accepted, published and failed
// (bridge.PublishObserver), the sink decorator from WrapSink matches replies, a
// timer marks commands expired, and the HTTP API reads (Get) and waits
// (Wait). Until Attach gives it a store it records nothing and reads fail
// with ErrStatusUnavailable. It is safe for concurrent use; Close stops
// its goroutines.
type Tracker struct {
	cfg     Config
	log     *slog.Logger
	metrics bridge.StatusMetrics
	now     func() time.Time

	store atomic.Pointer[storeRef]

	ctx     context.Context // cancelled by Close once the queue is drained
	cancel  context.CancelFunc
	mu      sync.RWMutex
	closed  bool
	jobs    chan replyJob // replies written or dead-lettered, to match
	workers sync.WaitGroup
	exp     *expiries

	dropWarn *ratelog.Limiter // the dropped-reply-update WARN, at most every 5 s

	// written holds the status and revision this replica just wrote for a
	// command being published, so the published (or failed) write can go
	// straight to Put instead of reading it back first: one store round
	// trip per step instead of two. A stale guess costs a conflict and the
	// usual read-modify-write.
	written sync.Map // StatusKey -> statusGuess
}

// statusGuess is a status and the revision it was stored under; the zero
// value guesses "no status yet" (Put with revision 0 creates).
type statusGuess struct {
	cur *bridge.CommandStatus
	rev uint64
}

type storeRef struct{ s bridge.StatusStore }

// New returns a tracker; m may be nil. Start starts its reply workers and
// expiry timer; call Attach once the store is open, and Close at shutdown.
func New(cfg Config, log *slog.Logger, m bridge.StatusMetrics) *Tracker {
	if m == nil {
		m = bridge.NopMetrics{}
	}
	t := &Tracker{
		cfg:     cfg,
		log:     log.With("component", "tracker"),
		metrics: m,
		now:     time.Now,
		jobs:    make(chan replyJob, replyQueueLen),
	}
	t.dropWarn = ratelog.New(5 * time.Second)
	t.exp = newExpiries(maxPendingExpiries, t.expire)
	return t
}

// Start starts the reply workers and the expiry timer; they run until
// Close. ctx only bounds the start (the workers outlive it, so that a
// reply queued before shutdown is still recorded). A second call is an
// error.
func (t *Tracker) Start(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.ctx != nil {
		return fmt.Errorf("start tracker: %w", bridge.ErrClosed)
	}
	t.ctx, t.cancel = context.WithCancel(context.WithoutCancel(ctx))
	t.exp.start()
	for range replyWorkers {
		t.workers.Add(1)
		go t.replyWorker()
	}
	return nil
}

// Attach sets the store the tracker records into and reads from. It may
// be called at any time (the backbone opens after the HTTP API starts).
func (t *Tracker) Attach(s bridge.StatusStore) { t.store.Store(&storeRef{s}) }

func (t *Tracker) storeOf() bridge.StatusStore {
	if r := t.store.Load(); r != nil {
		return r.s
	}
	return nil
}

// Get returns the status of org's command correlationID as of now:
// ErrStatusNotFound when unknown or expired from the store,
// ErrStatusUnavailable (wrapped) while there is no store or it fails.
func (t *Tracker) Get(ctx context.Context, org, correlationID string) (*bridge.CommandStatus, error) {
	st := t.storeOf()
	if st == nil {
		return nil, bridge.ErrStatusUnavailable
	}
	s, _, err := st.Get(ctx, org, correlationID)
	if err != nil {
		if errors.Is(err, bridge.ErrStatusNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", bridge.ErrStatusUnavailable, err)
	}
	s.Refresh(t.now())
	return s, nil
}

// Wait watches the status of org's command correlationID and returns it
// as soon as it is final (replied, expired, failed), when the command's
// TTL runs out, or when ctx ends (the caller's wait), whichever comes
// first; then the status as of that moment. It does not poll: it reads
// the store's watch. Errors as for Get.
func (t *Tracker) Wait(ctx context.Context, org, correlationID string) (*bridge.CommandStatus, error) {
	st := t.storeOf()
	if st == nil {
		return nil, bridge.ErrStatusUnavailable
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := st.Watch(wctx, org, correlationID)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", bridge.ErrStatusUnavailable, err)
	}
	var last *bridge.CommandStatus
	var expired <-chan time.Time
	for {
		select {
		case s, ok := <-ch:
			if !ok {
				return t.lastOrGet(ctx, last, org, correlationID)
			}
			s.Refresh(t.now())
			last = s
			if s.Final() {
				return s, nil
			}
			if expired == nil {
				tm := time.NewTimer(s.ExpiresAt.Sub(t.now()))
				defer tm.Stop()
				expired = tm.C
			}
		case <-expired:
			last.Refresh(t.now())
			return last, nil
		case <-ctx.Done():
			return t.lastOrGet(context.WithoutCancel(ctx), last, org, correlationID)
		}
	}
}

func (t *Tracker) lastOrGet(ctx context.Context, last *bridge.CommandStatus, org, correlationID string) (*bridge.CommandStatus, error) {
	if last != nil {
		last.Refresh(t.now())
		return last, nil
	}
	ctx, cancel := context.WithTimeout(ctx, statusWriteTimeout)
	defer cancel()
	return t.Get(ctx, org, correlationID)
}

// update reads the status, lets fn change it and writes it back with the
// revision read, again from the start when another replica wrote first.
// fn gets nil when there is no status and returns nil for "no change"; it
// may run more than once. With a guess, the first attempt skips the read
// and writes against the guessed status and revision. It returns the
// status written and its revision.
func (t *Tracker) update(ctx context.Context, org, correlationID string, guess *statusGuess, fn func(cur *bridge.CommandStatus) *bridge.CommandStatus) (*bridge.CommandStatus, uint64, error) {
	st := t.storeOf()
	if st == nil {
		return nil, 0, bridge.ErrStatusUnavailable
	}
	for attempt := 1; ; attempt++ {
		var cur *bridge.CommandStatus
		var rev uint64
		var err error
		if attempt == 1 && guess != nil {
			if guess.cur != nil {
				cur = guess.cur.Clone()
			}
			rev = guess.rev
		} else {
			cur, rev, err = st.Get(ctx, org, correlationID)
			switch {
			case errors.Is(err, bridge.ErrStatusNotFound):
				cur = nil // rev: 0, or that of an undecodable value to replace
			case err != nil:
				return nil, 0, err
			}
		}
		next := fn(cur)
		if next == nil {
			return nil, 0, nil
		}
		next.Refresh(t.now())
		n, err := st.Put(ctx, next, rev)
		if err == nil {
			return next, n, nil
		}
		if !errors.Is(err, bridge.ErrStatusConflict) || attempt >= maxUpdateAttempts {
			return nil, 0, err
		}
	}
}

// takeGuess returns (and forgets) what this replica wrote for the command
// at accept time, or nil.
func (t *Tracker) takeGuess(org, correlationID string) *statusGuess {
	if g, ok := t.written.LoadAndDelete(bridge.StatusKey(org, correlationID)); ok {
		gs := g.(statusGuess)
		return &gs
	}
	return nil
}

// CommandAccepted records command c as accepted, before the publisher
// publishes it, and arms its expiry. A status of the same command (a
// retry, a redelivered stream command) keeps what it knows, minus a
// failure; a status of an earlier command with the same correlation ID is
// replaced. It implements bridge.PublishObserver.
func (t *Tracker) CommandAccepted(tg bridge.Target, c bridge.Command, source string) {
	if t.storeOf() == nil {
		return
	}
	ctx, cancel := context.WithTimeout(t.ctx, acceptWriteTimeout)
	defer cancel()
	now := t.now()
	written, rev, err := t.update(ctx, tg.Org, c.CorrelationID, &statusGuess{}, func(cur *bridge.CommandStatus) *bridge.CommandStatus {
		if cur == nil || !cur.SameCommand(tg, c) {
			return bridge.NewCommandStatus(tg, c, source, now)
		}
		if cur.FailedAt.IsZero() {
			return nil
		}
		cur.FailedAt, cur.Error = time.Time{}, ""
		return cur
	})
	if err != nil {
		t.log.Warn("command status not recorded", "step", bridge.StatusAccepted, "org", tg.Org, "node", tg.Node, "correlation_id", c.CorrelationID, "err", err)
		return
	}
	if written != nil {
		t.written.Store(bridge.StatusKey(tg.Org, c.CorrelationID), statusGuess{cur: written, rev: rev})
	}
	t.exp.add(expiry{at: c.ExpiresAt(), org: tg.Org, correlationID: c.CorrelationID, issuedAt: c.IssuedAt})
}

// CommandPublished records the broker's PUBACK and its reason code (0x10:
// no subscribers). It implements bridge.PublishObserver.
func (t *Tracker) CommandPublished(tg bridge.Target, c bridge.Command, source string, res bridge.PublishResult) {
	if t.storeOf() == nil {
		return
	}
	ctx, cancel := context.WithTimeout(t.ctx, statusWriteTimeout)
	defer cancel()
	now := t.now()
	_, _, err := t.update(ctx, tg.Org, c.CorrelationID, t.takeGuess(tg.Org, c.CorrelationID), func(cur *bridge.CommandStatus) *bridge.CommandStatus {
		if cur == nil || !cur.SameCommand(tg, c) {
			cur = bridge.NewCommandStatus(tg, c, source, now) // its accepted write failed
		}
		if cur.PublishedAt.IsZero() {
			cur.PublishedAt = now.UTC()
		}
		rc := int(res.ReasonCode)
		cur.ReasonCode = &rc
		cur.NoSubscribers = res.ReasonCode == bridge.ReasonNoMatchingSubscribers
		cur.FailedAt, cur.Error = time.Time{}, ""
		return cur
	})
	if err != nil {
		t.log.Warn("command status not recorded", "step", bridge.StatusPublished, "org", tg.Org, "node", tg.Node, "correlation_id", c.CorrelationID, "err", err)
	}
}

// CommandFailed records why a command was not published. A stream command
// whose error is retryable is not failed: its source tries again until
// the TTL, and then the expiry ends it. A command that was published or
// answered before (a duplicate) keeps that. It implements
// bridge.PublishObserver.
func (t *Tracker) CommandFailed(tg bridge.Target, c bridge.Command, source string, cause error) {
	guess := t.takeGuess(tg.Org, c.CorrelationID)
	if t.storeOf() == nil || source == bridge.SourceStream && bridge.Retryable(cause) {
		return
	}
	ctx, cancel := context.WithTimeout(t.ctx, statusWriteTimeout)
	defer cancel()
	now := t.now()
	var first bool
	_, _, err := t.update(ctx, tg.Org, c.CorrelationID, guess, func(cur *bridge.CommandStatus) *bridge.CommandStatus {
		first = false
		if cur == nil || !cur.SameCommand(tg, c) {
			cur = bridge.NewCommandStatus(tg, c, source, now)
		}
		if !cur.PublishedAt.IsZero() || len(cur.Replies) > 0 || !cur.FailedAt.IsZero() {
			return nil
		}
		first = cur.ExpiredAt.IsZero()
		cur.FailedAt, cur.Error = now.UTC(), cause.Error()
		return cur
	})
	if err != nil {
		t.log.Warn("command status not recorded", "step", bridge.StatusFailed, "org", tg.Org, "node", tg.Node, "correlation_id", c.CorrelationID, "err", err)
		return
	}
	if first {
		t.metrics.CommandCompleted(bridge.StatusFailed)
	}
}

// expire runs on the expiry goroutine when a command's TTL ran out.
func (t *Tracker) expire(e expiry) {
	ctx, cancel := context.WithTimeout(t.ctx, statusWriteTimeout)
	defer cancel()
	now := t.now()
	var first bool
	_, _, err := t.update(ctx, e.org, e.correlationID, nil, func(cur *bridge.CommandStatus) *bridge.CommandStatus {
		first = false
		if cur == nil || cur.IssuedAt.Unix() != e.issuedAt || len(cur.Replies) > 0 || !cur.FailedAt.IsZero() || !cur.ExpiredAt.IsZero() {
			return nil
		}
		first = true
		cur.ExpiredAt = now.UTC()
		return cur
	})
	if err != nil {
		if t.ctx.Err() == nil {
			t.log.Warn("command status not recorded", "step", bridge.StatusExpired, "org", e.org, "correlation_id", e.correlationID, "err", err)
		}
		return
	}
	if first {
		t.metrics.CommandCompleted(bridge.StatusExpired)
	}
}

// Close stops the expiry timer and intake of replies, lets the workers
// finish the queued reply updates until ctx ends, then cancels what is
// left and waits for the workers. It does not close the store. Calling it
// again is a no-op.
func (t *Tracker) Close(ctx context.Context) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.jobs)
	started := t.ctx != nil
	t.mu.Unlock()
	if !started {
		return nil
	}
	t.exp.stop()

	done := make(chan struct{})
	go func() {
		t.workers.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("close tracker: reply status updates left: %w", ctx.Err())
	}
	t.cancel()
	<-done
	return err
}
