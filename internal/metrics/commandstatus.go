package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// statusSeries are the command tracking series (bridge.StatusMetrics).
type statusSeries struct {
	completed map[string]prometheus.Counter // by final status
	reply     prometheus.Observer
}

func newStatusSeries(f factory) *statusSeries {
	vec := f.counterVec("commands_completed_total", "Commands by the first final status they reached: replied, expired (TTL passed without a reply) or failed.", "status")
	s := &statusSeries{completed: make(map[string]prometheus.Counter, len(bridge.FinalStatuses))}
	for _, st := range bridge.FinalStatuses {
		s.completed[st] = vec.WithLabelValues(st)
	}
	s.reply = f.histogram("command_reply_latency_seconds", "Time from a command's PUBACK to its first reply.")
	return s
}

// CommandCompleted implements bridge.StatusMetrics; a status outside
// bridge.FinalStatuses is not counted.
func (m *Metrics) CommandCompleted(status string) {
	if c, ok := m.status.completed[status]; ok {
		c.Inc()
	}
}

// CommandReplied implements bridge.StatusMetrics.
func (m *Metrics) CommandReplied(latency time.Duration) {
	m.status.reply.Observe(latency.Seconds())
}

var _ bridge.StatusMetrics = (*Metrics)(nil)
