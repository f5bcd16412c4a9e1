package bridge

import (
	"testing"
	"time"
)

// Micro-benchmarks of the per-message hot path (issue 7). Run with
// go test -run '^$' -bench . -benchmem ./bridge/ ./sinks/natsjs/

func BenchmarkParseNodeTopic(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		t, err := ParseNodeTopic("org/demo/node/n42/events")
		if err != nil || t.Kind != KindEvents {
			b.Fatal(t, err)
		}
	}
}

func BenchmarkNodeTopicSubject(b *testing.B) {
	t := NodeTopic{Org: "demo", Node: "n42", Kind: KindEvents}
	b.ReportAllocs()
	for b.Loop() {
		if s := t.Subject("nr"); len(s) == 0 {
			b.Fatal(s)
		}
	}
}

func BenchmarkParseCommand(b *testing.B) {
	now := time.Unix(1795636528, 0)
	body := []byte(`{"type":"ping","version":1,"correlation_id":"bench-1","issued_at":1795636528,"ttl_sec":60,"payload":{"n":1}}`)
	limits := DefaultCommandLimits()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCommand(body, now, limits); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTargetValidate(b *testing.B) {
	t := Target{Org: "demo", Node: "n42"}
	b.ReportAllocs()
	for b.Loop() {
		if err := t.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}
