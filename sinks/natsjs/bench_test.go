package natsjs

import (
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// BenchmarkNatsMsg measures building the JetStream message (subject and
// headers) of a typical nr-sim event: content type and msg_id.
func BenchmarkNatsMsg(b *testing.B) {
	s := &Sink{cfg: Config{SubjectPrefix: "nr"}}
	payload := make([]byte, 256)
	m := bridge.NewMessage("org/demo/node/n42/events", payload, time.Now(), "application/json", nil,
		[]bridge.Property{{Name: "msg_id", Value: "9db34b75.demo.n42.1"}})
	b.ReportAllocs()
	for b.Loop() {
		if msg := s.natsMsg(m); msg.Subject == "" {
			b.Fatal(msg)
		}
	}
}
