package backoff

import (
	"testing"
	"time"
)

func TestExponential(t *testing.T) {
	b := Exponential(100*time.Millisecond, time.Second)
	for _, tc := range []struct {
		attempt int
		min     time.Duration
	}{{0, 100 * time.Millisecond}, {1, 200 * time.Millisecond}, {3, 800 * time.Millisecond}, {4, time.Second}, {50, time.Second}} {
		for range 100 {
			d := b(tc.attempt)
			if d < tc.min || d > tc.min+tc.min/5 {
				t.Fatalf("attempt %d: %s, want %s to %s", tc.attempt, d, tc.min, tc.min+tc.min/5)
			}
		}
	}
}
