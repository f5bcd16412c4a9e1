package ratelog

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	e := New(50 * time.Millisecond)
	if !e.Allow() || e.Allow() {
		t.Fatal("want the first event allowed and the second, at once, not")
	}
	time.Sleep(60 * time.Millisecond)
	if !e.Allow() {
		t.Fatal("want an event allowed after the interval")
	}
}

func TestFailures(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var f Failures
	refused, down := errors.New("connection refused"), errors.New("no route to host")
	for _, err := range []error{refused, refused, refused, down, down} {
		f.Failed(log, "connect failed", err, "url", "tcp://h:1883")
	}
	f.Reset()
	f.Failed(log, "connect failed", down, "url", "tcp://h:1883")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var levels []string
	for _, l := range lines {
		switch {
		case strings.Contains(l, `"level":"WARN"`):
			levels = append(levels, "W")
		case strings.Contains(l, `"level":"DEBUG"`):
			levels = append(levels, "D")
		}
	}
	if got := strings.Join(levels, ""); got != "WDDDDW" {
		t.Fatalf("levels %s, want WDDDDW:\n%s", got, buf.String())
	}
	if !strings.Contains(lines[2], `"attempt":3`) || !strings.Contains(lines[5], `"attempt":1`) || !strings.Contains(lines[0], `"url":"tcp://h:1883"`) {
		t.Fatalf("attempts or attributes wrong:\n%s", buf.String())
	}
}
