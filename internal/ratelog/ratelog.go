// Package ratelog keeps repeated log lines from flooding the log: a failure
// that repeats every few hundred milliseconds (a retried write, a broker
// that refuses connections) is logged at WARN when it is new or once per
// window, and at Debug in between. Every retry loop of the bridge uses it,
// so they all log alike.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Window is the interval of the bridge's rate-limited lines: a failure that
// does not change is logged at WARN at most this often.
const Window = 30 * time.Second

// Limiter lets one WARN through per interval; the zero value lets one
// through per Window. It is safe for concurrent use and never blocks.
type Limiter struct {
	interval time.Duration
	last     atomic.Int64 // unix nanos of the last WARN let through
}

// New returns a limiter of one WARN per interval.
func New(interval time.Duration) *Limiter { return &Limiter{interval: interval} }

// Allow reports whether a WARN may be logged now; a true answer starts the
// next interval.
func (l *Limiter) Allow() bool {
	iv := l.interval
	if iv <= 0 {
		iv = Window
	}
	now := time.Now().UnixNano()
	last := l.last.Load()
	return now-last >= int64(iv) && l.last.CompareAndSwap(last, now)
}

// Level is slog.LevelWarn when Allow, else slog.LevelDebug.
func (l *Limiter) Level() slog.Level {
	if l.Allow() {
		return slog.LevelWarn
	}
	return slog.LevelDebug
}

// Failures logs the failed attempts of one operation (connecting to a
// broker, say): the first at WARN, then at most one WARN per Window, the
// others at Debug, each with its attempt number. Errors are not compared:
// they embed ephemeral ports and alternate between the stages a connection
// fails at, so each would look new. Reset after a success, so the next
// failure is WARN again. It is safe for concurrent use.
type Failures struct {
	mu       sync.Mutex
	attempt  int
	lastWarn time.Time
}

// Failed logs err as attempt n of msg on log, with attrs.
func (f *Failures) Failed(log *slog.Logger, msg string, err error, attrs ...any) {
	f.mu.Lock()
	f.attempt++
	attempt := f.attempt
	warn := time.Since(f.lastWarn) >= Window
	if warn {
		f.lastWarn = time.Now()
	}
	f.mu.Unlock()
	level := slog.LevelDebug
	if warn {
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, msg, append(attrs, "err", err, "attempt", attempt)...)
}

// Reset forgets the failures: the operation succeeded.
func (f *Failures) Reset() {
	f.mu.Lock()
	f.attempt, f.lastWarn = 0, time.Time{}
	f.mu.Unlock()
}
