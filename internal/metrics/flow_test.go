package metrics_test

import (
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/metrics"
)

// TestFlowRates counts messages between reports and checks the rates,
// totals, in-flight sum, connection states and history.
func TestFlowRates(t *testing.T) {
	m := metrics.New(metrics.BackboneNATS, "test")
	f := metrics.NewFlow(m)
	m.MQTTConnected("w-1", true)
	m.MQTTConnected("pub", false)
	m.TrackInflight("w-1", func() int { return 3 })
	m.TrackInflight("w-2", func() int { return 4 })
	t0 := time.Unix(1000, 0)
	first := f.Report(t0)
	if first.Rates.Events != 0 || len(first.History) != 0 || first.Inflight != 7 {
		t.Fatalf("first report: %+v", first)
	}
	if got := first.Connections; len(got) != 2 || got[0] != (metrics.MQTTConnection{ClientID: "pub", Up: false}) || got[1] != (metrics.MQTTConnection{ClientID: "w-1", Up: true}) {
		t.Errorf("connections: %+v", got)
	}
	for range 20 {
		m.MessageForwarded(bridge.KindEvents, time.Millisecond)
	}
	for range 4 {
		m.MessageForwarded(bridge.KindReply, time.Millisecond)
	}
	m.CommandPublished(bridge.SourceHTTP, time.Millisecond)
	m.CommandPublished(bridge.SourceStream, time.Millisecond)
	m.DeadLettered(bridge.ReasonPoison)
	m.DeadLettered("nonsense")
	r := f.Report(t0.Add(2 * time.Second))
	want := metrics.FlowRates{At: t0.Add(2 * time.Second).UTC(), Events: 10, Replies: 2, Commands: 1, DeadLetters: 1}
	if r.Rates != want {
		t.Errorf("rates %+v, want %+v", r.Rates, want)
	}
	if r.Totals != (metrics.FlowTotals{Events: 20, Replies: 4, Commands: 2, DeadLetters: 2}) {
		t.Errorf("totals %+v", r.Totals)
	}
	if len(r.History) != 1 || r.History[0] != want {
		t.Errorf("history %+v, want [%+v]", r.History, want)
	}
	// A report asked for again at once shares the sample: same rates.
	if again := f.Report(t0.Add(2100 * time.Millisecond)); again.Rates.Events != 20.0/2.1 || len(again.History) != 1 {
		t.Errorf("report 100ms later: %+v", again)
	}
	// After the window the old points are gone.
	late := f.Report(t0.Add(2*time.Second + metrics.FlowWindow + time.Second))
	if len(late.History) != 0 || late.Rates.Events != 0 {
		t.Errorf("after the window: %d points, rates %+v; want none, 0/s", len(late.History), late.Rates)
	}
}
