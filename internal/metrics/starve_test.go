package metrics_test

import (
	"testing"

	"github.com/nr-bridge/nr-bridge/internal/metrics"
)

// TestWorkerStarved: a worker's starved counter exists at 0 once the worker
// is tracked, and counts each WorkerStarved.
func TestWorkerStarved(t *testing.T) {
	m := metrics.New(metrics.BackboneNATS, "test")
	m.TrackInflight("b-w1", func() int { return 0 })
	m.TrackInflight("b-w2", func() int { return 0 })
	m.WorkerStarved("b-w2")
	m.WorkerStarved("b-w2")
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "nr_bridge_worker_starved_total" {
			continue
		}
		for _, mt := range f.GetMetric() {
			got[mt.GetLabel()[0].GetValue()] = mt.GetCounter().GetValue()
		}
	}
	if len(got) != 2 || got["b-w1"] != 0 || got["b-w2"] != 2 {
		t.Fatalf("nr_bridge_worker_starved_total = %v, want b-w1 0, b-w2 2", got)
	}
}
