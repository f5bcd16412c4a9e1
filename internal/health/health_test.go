package health

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestWrites(t *testing.T) {
	var w Writes
	if err := w.Check(0); err != nil {
		t.Fatalf("fresh: %v", err)
	}
	refused := errors.New("UNKNOWN_TOPIC_OR_PARTITION")
	w.Observe(refused)
	if err := w.Check(time.Hour); err != nil {
		t.Fatalf("failing for less than the threshold: %v", err)
	}
	err := w.Check(0)
	if !errors.Is(err, refused) || !strings.HasPrefix(err.Error(), "backbone writes failing for ") {
		t.Fatalf("Check = %v", err)
	}
	w.Observe(nil)
	if err := w.Check(0); err != nil {
		t.Fatalf("after a success: %v", err)
	}
}

// A burst of asks costs one repair; asks after it wait out the interval;
// Stop ends Run.
func TestRepairer(t *testing.T) {
	repaired := make(chan time.Time, 10)
	r := NewRepairer(200*time.Millisecond, func() { repaired <- time.Now() })
	r.Start()
	for range 5 {
		r.Ask()
	}
	first := <-repaired
	r.Ask()
	second := <-repaired
	if gap := second.Sub(first); gap < 200*time.Millisecond {
		t.Errorf("second repair %v after the first, want at least the interval", gap)
	}
	r.Stop()
	<-r.Done()
	if n := len(repaired); n != 0 {
		t.Errorf("%d more repairs than asked for", n)
	}
}
