package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nr-bridge/nr-bridge/bridge"
)

var _ bridge.Metrics = (*Metrics)(nil)

// newStarvedSeries creates nr_bridge_worker_starved_total.
func newStarvedSeries(f factory) *prometheus.CounterVec {
	return f.counterVec("worker_starved_total", "Reconnects of a worker (client ID) that the broker sent nothing for MQTT_STARVE_TIMEOUT while its sibling workers on the same shared subscription kept receiving and it held nothing un-acknowledged (Mochi's and Comqtt's send-quota stall; docs/compatibility.md).", "worker")
}

// WorkerStarved counts a reconnect of a starved worker.
func (m *Metrics) WorkerStarved(worker string) { m.starved.WithLabelValues(worker).Inc() }
