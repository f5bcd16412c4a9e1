package health

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Writes records the outcome of a sink's writes. The zero value is ready
// to use and reports healthy; it is safe for concurrent use and cheap
// enough for the write path (two atomic operations per outcome).
type Writes struct {
	failingSince atomic.Int64          // unix nanos of the first failure since the last success; 0 while writes succeed
	lastErr      atomic.Pointer[error] // the last failure
}

// Observe records one write's outcome: nil for a write the backbone
// acknowledged, else the error.
func (w *Writes) Observe(err error) {
	if err == nil {
		if w.failingSince.Load() != 0 {
			w.failingSince.Store(0)
		}
		return
	}
	w.lastErr.Store(&err)
	w.failingSince.CompareAndSwap(0, time.Now().UnixNano())
}

// Check returns nil unless every write for longer than after has failed,
// then an error saying for how long and the last failure.
func (w *Writes) Check(after time.Duration) error {
	since := w.failingSince.Load()
	if since == 0 {
		return nil
	}
	d := time.Since(time.Unix(0, since))
	if d < after {
		return nil
	}
	var last error
	if p := w.lastErr.Load(); p != nil {
		last = *p
	}
	return fmt.Errorf("backbone writes failing for %s: %w", d.Round(time.Second), last)
}
