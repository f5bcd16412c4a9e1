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
