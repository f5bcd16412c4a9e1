// Package ratelog is the one rate limit of repeated WARN lines: a failure
// that repeats for every message (a broker outage seen by each retry) is
// logged at WARN at most once per interval and at Debug otherwise, so the
// log says what is wrong without a line per message.
package ratelog

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// Limiter lets one WARN through per interval. The zero value is not
// usable; use New. It is safe for concurrent use and never blocks.
type Limiter struct {
	interval time.Duration
	last     atomic.Int64 // unix nanos of the last WARN let through
}

// New returns a limiter of one WARN per interval.
func New(interval time.Duration) *Limiter { return &Limiter{interval: interval} }

// Allow reports whether a WARN may be logged now; a true answer starts the
// next interval.
func (l *Limiter) Allow() bool {
	now := time.Now().UnixNano()
	last := l.last.Load()
	return now-last > int64(l.interval) && l.last.CompareAndSwap(last, now)
}

// Level is slog.LevelWarn when Allow, else slog.LevelDebug.
func (l *Limiter) Level() slog.Level {
	if l.Allow() {
		return slog.LevelWarn
	}
	return slog.LevelDebug
}
