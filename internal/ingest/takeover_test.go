package ingest_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/ingest"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// TestSessionTakenOverReported: two bridges with the same client ID take
// the session from each other. Each logs a WARN that names the client ID
// and says why, /readyz (Receiver.Ready) says so instead of "not
// connected", and repeated connection failures do not flood the log.
func TestSessionTakenOverReported(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	var logs tlsLogs
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := bridgetest.MQTTConfig(mq.URL(), "same-id")
	cfg.Workers = 1
	start := func() *ingest.Receiver {
		r := ingest.NewReceiver(cfg, newFlakySink(0), log, nil)
		if err := r.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = r.Close(ctx)
		})
		return r
	}
	a := start()
	testserver.WaitFor(t, 10*time.Second, "first bridge ready", func() bool { return a.Ready() == nil })
	b := start()
	testserver.WaitFor(t, 15*time.Second, "takeover reported", func() bool {
		return strings.Contains(logs.String(), `"msg":"MQTT session taken over: another client connected with this client ID; give every bridge its own MQTT_CLIENT_ID"`)
	})
	if !strings.Contains(logs.String(), `"client_id":"same-id-w1"`) {
		t.Fatalf("the WARN does not name the client ID:\n%s", logs.String())
	}
	var why error
	testserver.WaitFor(t, 10*time.Second, "readiness names the takeover", func() bool {
		for _, r := range []*ingest.Receiver{a, b} {
			if err := r.Ready(); err != nil && strings.Contains(err.Error(), "same-id-w1 (session taken over by another client with the same client ID") {
				why = err
				return true
			}
		}
		return false
	})
	t.Logf("readiness: %v", why)
	time.Sleep(2 * time.Second) // the flapping goes on
	out := logs.String()
	if lost, taken := strings.Count(out, `"level":"WARN","msg":"MQTT connection lost"`), strings.Count(out, `"msg":"MQTT session taken over`); lost > 6 || taken > 2 {
		t.Fatalf("%d connection-lost and %d takeover WARN lines: the flapping floods the log:\n%s", lost, taken, out)
	}
}
